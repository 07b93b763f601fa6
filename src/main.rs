//! The `ringlb` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use ringlb::config::Config;
use ringlb::io::CountingAllocator;
use ringlb::server::takeover::{self, Handover, Taker};

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
        /// Take the listening sockets over from the ringlb serving
        /// `server.upgrade_socket` (binary upgrade), then tell it to stop.
        #[arg(long)]
        takeover: bool,
    },
    /// Validate a config file, print a summary, and exit 0 (valid) or 1.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Also resolve each upstream's `discovery` name now and print the
        /// set found (without it, discovery keys are checked, not resolved).
        #[arg(long)]
        resolve: bool,
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

/// The system allocator, counting what worker threads allocate
/// (`ringlb_worker_heap_allocations_total`).
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> ExitCode {
    ringlb::io::tune_allocator();
    let cli = Cli::parse();
    init_logging();
    match (cli.command, cli.config) {
        (Some(Command::Run { config, takeover }), _) => run(&config, takeover),
        (None, Some(config)) => run(&config, false),
        (Some(Command::Check { config, resolve }), _) => check(&config, resolve),
        (Some(Command::Demo { listen, admin }), _) => match ringlb::demo::config(listen, admin) {
            Ok(config) => serve(Arc::new(config), true, false),
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

fn check(path: &std::path::Path, resolve: bool) -> ExitCode {
    match load(path) {
        Ok(config) => {
            if resolve && !check_discovery(&config) {
                return ExitCode::FAILURE;
            }
            println!("{}: ok", path.display());
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `check --resolve`: resolves every discovery name now and prints what it
/// found; false if one does not resolve and has no `allow_empty`.
fn check_discovery(config: &Config) -> bool {
    let mut ok = true;
    for u in &config.upstreams {
        let Some(d) = &u.discovery else { continue };
        match ringlb::discovery::dns::resolve_blocking(d) {
            Ok(found) => {
                let list: Vec<String> = found
                    .backends
                    .iter()
                    .map(|b| format!("{} weight {}", b.addr, b.weight))
                    .collect();
                println!(
                    "upstreams.{}.discovery: {}: {}",
                    u.name,
                    d.source(),
                    list.join(", ")
                );
            }
            Err(e) if d.allow_empty => {
                println!(
                    "upstreams.{}.discovery: {} (allow_empty): {e}",
                    u.name,
                    d.source()
                );
            }
            Err(e) => {
                eprintln!(
                    "{}: upstreams.{}.discovery: cannot resolve {:?}: {e}",
                    config.source_path.display(),
                    u.name,
                    d.dns
                );
                ok = false;
            }
        }
    }
    ok
}

fn run(path: &std::path::Path, takeover: bool) -> ExitCode {
    match load(path) {
        Ok(config) => serve(Arc::new(config), false, takeover),
        Err(code) => code,
    }
}

fn serve(config: Arc<Config>, demo: bool, takeover: bool) -> ExitCode {
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
    // A takeover receives the old process's sockets first; any failure
    // until `complete` leaves the old process serving untouched.
    let mut handover = Handover::default();
    let taker = if takeover {
        let Some(path) = &config.server.upgrade_socket else {
            tracing::error!(
                "takeover failed: --takeover needs server.upgrade_socket in {}",
                config.source_path.display()
            );
            return ExitCode::FAILURE;
        };
        match Taker::connect(path) {
            Ok((taker, received)) => {
                handover = received;
                Some(taker)
            }
            Err(e) => {
                tracing::error!("takeover failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        if let Some(path) = &config.server.upgrade_socket {
            if let Err(e) = takeover::check_unserved(path) {
                tracing::error!("server.upgrade_socket: {e}");
                return ExitCode::FAILURE;
            }
        }
        None
    };
    let mut server = match ringlb::server::start_with(config, &mut handover) {
        Ok(server) => server,
        Err(e) if taker.is_some() => {
            tracing::error!("takeover failed, the old process serves on: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(taker) = taker {
        match taker.complete() {
            Ok(old) => tracing::info!(old_pid = old, "takeover: the old process stopped accepting"),
            Err(e) => tracing::warn!("takeover: {e}; serving anyway"),
        }
    }
    // The sockets of listeners this config no longer has close now.
    drop(handover);
    if let Err(e) = server.serve_upgrades(&signals, takeover) {
        tracing::error!("{e}");
        // After a takeover the old process is gone: serve on without one.
        if !takeover {
            return ExitCode::FAILURE;
        }
    }
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
    // After a takeover this process is the service's main process now
    // (systemd accepts it with `NotifyAccess=all`).
    let ready = if takeover {
        ringlb::notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()))
    } else {
        ringlb::notify::ready()
    };
    if let Err(e) = ready {
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
