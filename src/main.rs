//! `metadatafs`: parse the command line, start logging, run.

use std::process::ExitCode;

use metadatafs::logging::{self, Target};

fn main() -> ExitCode {
    let config = match metadatafs::cli::parse(
        std::env::args_os(),
        std::env::var("GCE_METADATA_HOST").ok(),
    ) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    let target = match &config.log_file {
        Some(path) => Target::File(path.clone()),
        None if metadatafs::daemon::is_background_child() => Target::Syslog,
        None => Target::Stderr,
    };
    if let Err(e) = logging::init(&target) {
        let path = config.log_file.as_deref().unwrap_or(std::path::Path::new("")).display();
        eprintln!("metadatafs: log_file {path}: {e}");
        return ExitCode::FAILURE;
    }
    match metadatafs::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadatafs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
