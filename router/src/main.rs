//! The `switchyard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::Config;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Real-time customer-event router: HTTP and Postgres CDC in, \
    account-ordered Redis Streams log, WebAssembly transforms, ordered HTTP delivery out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router: ingest, log, transforms and delivery.
    Run {
        /// Config file (see config/switchyard.toml for every key).
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file; prints every error with its TOML path.
    Check {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Print events from the log as JSON lines.
    Tail {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Only topics matching this glob (e.g. `customer.*.email_changed`).
        #[arg(long)]
        topic: Option<String>,
        /// Only this account (reads just its partition).
        #[arg(long)]
        account: Option<String>,
        /// Start at the oldest retained event or after the newest.
        #[arg(long, value_enum, default_value = "latest")]
        from: switchyard::cli::tail::From,
        /// Exit after printing this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Exit when caught up instead of waiting for new events.
        #[arg(long)]
        no_follow: bool,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("SWITCHYARD_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("building the tokio runtime");
    rt.block_on(async move {
        let result: anyhow::Result<()> = match cli.command {
            Command::Check { config } => {
                return match Config::load(&config) {
                    Ok(_) => {
                        println!("{}: ok", config.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(2)
                    }
                };
            }
            Command::Run { config } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let shutdown = switchyard::app::shutdown_on_signals();
                switchyard::app::run(cfg, shutdown).await
            }
            Command::Tail { config, topic, account, from, limit, no_follow } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let args = switchyard::cli::tail::TailArgs { topic, account, from, limit, no_follow };
                let mut out = std::io::stdout();
                switchyard::cli::tail::tail(&cfg, args, &mut out).await.context("tail")
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
