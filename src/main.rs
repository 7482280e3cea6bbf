//! `metadatafs`: parse the command line, start logging, run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match metadatafs::cli::parse(
        std::env::args_os(),
        std::env::var("GCE_METADATA_HOST").ok(),
    ) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,fuser=error"))
        .init();
    match metadatafs::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadatafs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
