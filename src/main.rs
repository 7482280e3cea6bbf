//! `metadatafs`: parse the command line, start logging, run.

use std::process::ExitCode;

use metadatafs::cli::mount_helper::Helper;
use metadatafs::service::logging::{self, Target};

fn main() -> ExitCode {
    // Installed as /sbin/mount.fuse.metadatafs, mount(8) calls us with its own conventions.
    match metadatafs::cli::mount_helper::translate(
        std::env::args_os().collect(),
        metadatafs::service::daemon::is_background_child(),
    ) {
        Some(Helper::Fake) => return ExitCode::SUCCESS,
        Some(Helper::Run(args)) => {
            eprintln!("metadatafs: {}", metadatafs::cli::mount_helper::exec(args));
            return ExitCode::FAILURE;
        }
        None => {}
    }
    let config = match metadatafs::cli::parse(
        std::env::args_os(),
        std::env::var("GCE_METADATA_HOST").ok(),
    ) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    let target = match &config.log_file {
        Some(path) => Target::File(path.clone()),
        None if metadatafs::service::daemon::is_background_child() => Target::Syslog,
        None => Target::Stderr,
    };
    if let Err(e) = logging::init(&target) {
        let path = config.log_file.as_deref().unwrap_or(std::path::Path::new("")).display();
        eprintln!("metadatafs: log_file {path}: {e}");
        return ExitCode::FAILURE;
    }
    match metadatafs::service::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadatafs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
