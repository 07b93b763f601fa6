//! The `ringlb` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use ringlb::config::Config;

/// An HTTP/1.1 edge load balancer for Linux, thread-per-core on io_uring.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run the proxy with this config file (same as `ringlb run --config FILE`).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file, print a summary, and exit 0 (valid) or 1.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start three demo backends, the proxy in front of them and the admin
    /// listener (status page and metrics).
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the admin listener (status page, /metrics) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match (cli.command, cli.config) {
        (Some(Command::Run { config }), _) | (None, Some(config)) => run(&config),
        (Some(Command::Check { config }), _) => check(&config),
        (Some(Command::Demo { listen, admin }), _) => match ringlb::demo::config(listen, admin) {
            Ok(config) => serve(Arc::new(config), true),
            Err(e) => {
                eprintln!("ringlb: demo: {e}");
                ExitCode::FAILURE
            }
        },
        (None, None) => {
            eprintln!("ringlb: no config given; try `ringlb --config FILE`, `ringlb demo` or `ringlb --help`");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!("{}: ok", path.display());
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => serve(Arc::new(config), false),
        Err(code) => code,
    }
}

fn serve(config: Arc<Config>, demo: bool) -> ExitCode {
    // Before any worker starts: a missing io_uring is named, not a worker
    // dying with a bare OS error.
    if let Err(e) = ringlb::io::probe_uring() {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let signals = match ringlb::server::StopSignals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match ringlb::server::start(config) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if demo {
        if let Some(addr) = server.listening.first() {
            println!("ringlb demo: three backends behind http://{addr}/");
            println!("try:  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
            if let Some(admin) = &server.admin {
                let admin = admin.local_addr();
                println!("status page: http://{admin}/");
                println!("metrics:     http://{admin}/metrics");
            }
            println!("stop: Ctrl-C");
        }
    }
    if let Err(e) = ringlb::notify::ready() {
        tracing::debug!(error = %e, "sd_notify READY failed");
    }
    let signal = ringlb::server::wait_for_signal(&server, signals);
    if signal == signal_hook::consts::SIGINT {
        // Fast exit: the process ends with every socket.
        ringlb::server::log_totals(&server, signal);
        return ExitCode::SUCCESS;
    }
    if !server.stop_gracefully_logged(signal) {
        tracing::warn!("shutdown_timeout reached with requests still in flight");
    }
    ExitCode::SUCCESS
}
