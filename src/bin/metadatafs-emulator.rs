//! `metadatafs-emulator`: a local GCE metadata server for tests and for running GCE code off GCE.
//!
//! Prints the address it listens on as the first line of stdout (so `--listen 127.0.0.1:0` can be
//! used by scripts), serves until SIGINT/SIGTERM, then exits 0. Bad usage exits 2, a bad fixture 1.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use metadatafs::emulator::{Emulator, EmulatorConfig};

/// A faithful local emulator of the Google Compute Engine metadata server.
#[derive(Debug, Parser)]
#[command(name = "metadatafs-emulator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Fixture: the JSON of `GET /computeMetadata/v1/?recursive=true&alt=json` from a real VM.
    #[arg(long, value_name = "FILE.json")]
    fixture: Option<PathBuf>,
    /// Lifetime of a new access token, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=366 * 24 * 3600))]
    token_lifetime: u64,
    /// A cached access token is returned again while more than this many seconds remain.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    cache_window: u64,
    /// Also serve HTTPS requiring a client certificate; write root.crt and client.key here.
    #[arg(long, value_name = "DIR")]
    tls: Option<PathBuf>,
}

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let rendered = e.to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("error: bad usage"));
            std::process::exit(2);
        }
    };
    if args.cache_window >= args.token_lifetime {
        eprintln!(
            "error: --cache-window ({}) must be shorter than --token-lifetime ({})",
            args.cache_window, args.token_lifetime
        );
        std::process::exit(2);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let config = EmulatorConfig {
        listen: args.listen,
        fixture: args.fixture,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        cache_window: Duration::from_secs(args.cache_window),
        tls: args.tls,
    };
    let emulator = match Emulator::start(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("metadatafs-emulator: {e}");
            std::process::exit(1);
        }
    };
    // Signals are ours before the address is out: whoever reads it may stop us at once.
    let signals = match Signals::listen() {
        Ok(signals) => Some(signals),
        Err(e) => {
            eprintln!("metadatafs-emulator: cannot wait for signals: {e}");
            None
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", emulator.addr());
    let _ = out.flush();
    if let Some(signals) = signals {
        signals.wait();
    }
    emulator.shutdown();
}

/// SIGTERM and SIGINT, registered: [`Signals::wait`] returns at the first.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (term, int) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        Ok(Signals { rt, term, int })
    }

    fn wait(mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        });
    }
}
