//! The `switchyard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

mod admin_client;
mod check;
mod diff;
mod mcp;
mod new;
mod privacy;
mod quarantine;
mod schema;
mod sink;
mod tail;
mod transform;

use crate::admin_client::AdminClient;
use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard_config::Config;

async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    let f = match &action {
        DlqAction::List(f) | DlqAction::Replay(f) | DlqAction::Drop(f) => f,
        DlqAction::Show { filter, .. } => filter,
    };
    let cfg = Config::load(&f.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The running router's admin API, or Redis when none runs.
    let admin = AdminClient::connect(&cfg).await?;
    let account = f.account.as_deref();
    let sel = switchyard_router::admin_api::Selection {
        account: f.account.clone(),
        since: f.since.map(|t| t.to_rfc3339()),
        id: None,
    };
    match &action {
        DlqAction::List(f) => {
            for e in admin.dlq_list(&f.consumer, account, f.since).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        DlqAction::Show { id, .. } => match admin.dlq_show(&f.consumer, id).await? {
            Some(e) => println!("{}", serde_json::to_string_pretty(&e)?),
            None => anyhow::bail!("no DLQ entry with id `{id}` for consumer {}", f.consumer),
        },
        DlqAction::Replay(f) => {
            let n = admin.dlq_change(&f.consumer, &sel, true).await?;
            println!("{n} event(s) sent back for delivery");
        }
        DlqAction::Drop(f) => {
            let n = admin.dlq_change(&f.consumer, &sel, false).await?;
            println!("{n} event(s) dropped");
        }
    }
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Real-time customer-event router: HTTP and Postgres CDC in, \
    account-ordered Redis Streams log, WebAssembly transforms, ordered HTTP delivery out"
)]
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
    /// Check a config file: prints every error with its TOML path, including
    /// modules that do not load or whose `init` refuses their config.
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
        from: crate::tail::From,
        /// Exit after printing this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Exit when caught up instead of waiting for new events.
        #[arg(long)]
        no_follow: bool,
    },
    /// Inspect, replay or drop a consumer's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Manage a consumer's position in the log.
    Consumer {
        #[command(subcommand)]
        action: ConsumerAction,
    },
    /// Ask the running router to reload its transform chains from the config (like SIGHUP).
    Reload {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Schemas: `schema check` refuses a registry version (`[schemas]`) that
    /// breaks backward compatibility; `schema history` lists the table
    /// changes a CDC source detected.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Work on WebAssembly transforms.
    Transform {
        #[command(subcommand)]
        action: TransformAction,
    },
    /// Scaffold a new project: `switchyard new module NAME --lang rust|python|js`.
    New {
        #[command(subcommand)]
        what: NewWhat,
    },
    /// A local endpoint that prints every request it receives (try a consumer without a vendor).
    Sink {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
    /// Per consumer: state, lag, rate, p99, DLQ, parked accounts, modules,
    /// last error; per source: rate and lag; health. From the running
    /// router's admin API, or from Redis when none runs.
    Status {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Print the admin API's status document (JSON) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Privacy policies: `policy test` shows what a consumer would receive of one event.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Where each event of an account went: every delivery outcome and
    /// policy decision recorded in the audit trail (ids and field names only).
    Audit {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        account: String,
        /// Only records at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A CDC source's quarantine: records it could not map (invalid topic,
    /// oversized event, undecodable row).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// An MCP server on stdin/stdout: status, lag, DLQ and account tools for agents.
    Mcp {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Show event payloads in DLQ and tail results (redacted otherwise).
        #[arg(long)]
        show_payloads: bool,
    },
}

#[derive(clap::Args)]
struct DlqFilter {
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    #[arg(long)]
    consumer: String,
    /// Only this account.
    #[arg(long)]
    account: Option<String>,
    /// Only entries dead-lettered at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time (e.g. 2026-11-23T09:00:00Z): {e}"))
}

#[derive(Subcommand)]
enum DlqAction {
    /// List entries as JSON lines (without the event body; see `show`).
    List(DlqFilter),
    /// Show one entry, with its event, by event id or DLQ id.
    Show {
        #[command(flatten)]
        filter: DlqFilter,
        id: String,
    },
    /// Deliver entries again, in account order; parked events follow the failed one.
    Replay(DlqFilter),
    /// Delete entries for good (an account with nothing left in the DLQ flows again).
    Drop(DlqFilter),
}

#[derive(Subcommand)]
enum SchemaAction {
    /// Load every schema, then compare each version with the one before:
    /// a removed, optional-made or retyped required field, a new required
    /// field or a narrowed enum is refused, naming the file and the field
    /// (exit 1; 2 when a schema does not load).
    Check {
        /// Config file whose `schemas.dir` to check.
        #[arg(long, short, required_unless_present = "dir", conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// The schema folder itself (`<family>/<version>.json`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the schema changes a CDC source detected, oldest first.
    History {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// The source (`[sources.<name>]`).
        #[arg(long)]
        source: String,
        /// Only this table (`schema.table` or `table`).
        #[arg(long)]
        table: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// List the quarantined records, oldest first.
    List {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        source: String,
        /// JSON lines (with the event) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Append quarantined records to the log and remove them; one that
    /// still cannot be written is kept, with the reason (exit status 1).
    Replay {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        source: String,
        /// Only this record (its id, from `list`).
        #[arg(long)]
        id: Option<String>,
        /// Write the events with this topic instead of their own (for an
        /// invalid topic made from column values).
        #[arg(long)]
        topic: Option<String>,
    },
}

/// `source` is a configured source, or an error naming the ones there are.
fn source_exists(cfg: &Config, source: &str) -> anyhow::Result<()> {
    if cfg.sources.contains_key(source) {
        return Ok(());
    }
    let names: Vec<&str> = cfg.sources.keys().map(String::as_str).collect();
    anyhow::bail!(
        "no source `{source}` in the config (sources: {})",
        names.join(", ")
    )
}

#[derive(Subcommand)]
enum TransformAction {
    /// Run a chain on one event (JSON like a POST /v1/events body) and print the outputs or the error.
    Test {
        /// Take the chain of `--consumer` from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        consumer: Option<String>,
        /// Or run these modules, in order (repeat the flag).
        #[arg(long = "module")]
        modules: Vec<PathBuf>,
        /// Module config for `--module`, as key=value (repeat the flag).
        #[arg(long = "set")]
        set: Vec<String>,
        /// The event file.
        #[arg(long)]
        event: PathBuf,
        /// Per-call deadline of each module (e.g. `2s`), instead of the
        /// configured or default one (100ms): interpreter guests (Python,
        /// JavaScript) can need more on a busy machine.
        #[arg(long, value_parser = humantime::parse_duration)]
        deadline: Option<std::time::Duration>,
    },
    /// Run a consumer's chain and the chain with a new module over the
    /// consumer's newest events in the log, and print what would change per
    /// event. Nothing is sent. Exit status 0: no change, 1: changes, 2: error.
    Diff {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        consumer: String,
        /// The new build of one of the chain's modules.
        #[arg(long)]
        module: PathBuf,
        /// The chain module it replaces (name or file stem); needed when the
        /// chain has several modules and none has the new file's stem.
        #[arg(long)]
        replace: Option<String>,
        /// How many of the consumer's newest events to run.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// JSON lines (event id, changed, both outcomes) instead of diffs.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Run the consumer's privacy policy (then its chain) on one event and
    /// print what it would receive, each rule that removed or changed a
    /// field, and the consent decision with its reason.
    Test {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        consumer: String,
        /// The event file (JSON like a POST /v1/events body).
        #[arg(long)]
        event: PathBuf,
        /// The account's stored consent, `purpose=granted|denied|unknown`
        /// (repeat the flag); the event's own `consent` map applies on top.
        #[arg(long)]
        consent: Vec<String>,
    },
}

#[derive(Subcommand)]
enum NewWhat {
    /// A transform module that builds and passes `transform test` as it is:
    /// the module, README, sample event, build script and a unit test.
    Module {
        /// Lowercase letters, digits and `-` (e.g. `loyalty-sync`).
        name: String,
        #[arg(long, value_enum)]
        lang: crate::new::Lang,
        /// Parent directory (the module goes to DIR/NAME).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rust only: the guest SDK (`guest-sdk/` of a Switchyard checkout);
        /// defaults to the one this binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// `switchyard schema check`.
fn schema_check(config: Option<PathBuf>, dir: Option<PathBuf>) -> ExitCode {
    let dir = match (config, dir) {
        (_, Some(d)) => d,
        (Some(c), None) => match load(&c) {
            Ok(cfg) => match cfg.schemas {
                Some(s) => s.dir,
                None => {
                    eprintln!("{}: has no [schemas] table (schemas.dir)", c.display());
                    return ExitCode::from(2);
                }
            },
            Err(code) => return code,
        },
        (None, None) => unreachable!("clap requires --config or --dir"),
    };
    let reg = match switchyard_sources::schema::Registry::load(&dir) {
        Ok(r) => r,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let breaking = reg.breaking_changes();
    if !breaking.is_empty() {
        for b in &breaking {
            eprintln!("{b}");
        }
        eprintln!(
            "{} backward-incompatible change(s): publish the change as a new family, or keep the previous version's fields",
            breaking.len()
        );
        return ExitCode::from(1);
    }
    let versions: usize = reg.families().map(|(_, v)| v.len()).sum();
    println!(
        "{}: ok ({} families, {versions} versions, each compatible with the one before)",
        dir.display(),
        reg.families().count()
    );
    ExitCode::SUCCESS
}

#[derive(Subcommand)]
enum ConsumerAction {
    /// Deliver again from `earliest` (oldest retained event) or an RFC 3339 time.
    Rewind {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// The consumer.
        consumer: String,
        #[arg(long)]
        to: String,
    },
}

fn init_tracing() {
    // A bare level is the router's; other crates stay at warn unless named.
    let filter =
        switchyard_core::log_filter::filter(std::env::var("SWITCHYARD_LOG").ok().as_deref());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(switchyard_core::logging::ansi());
    if std::env::var("SWITCHYARD_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().flatten_event(true).init();
    } else {
        // Values escaped: a client's newline or ESC cannot forge a line.
        b.fmt_fields(switchyard_core::logging::EscapedFields).init();
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
    switchyard_core::panic::install_hook();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    rt.block_on(async move {
        let result: anyhow::Result<()> = match cli.command {
            Command::Check { config } => {
                // Loads every module (compiling it, blocking): off the async workers.
                return match tokio::task::block_in_place(|| crate::check::check(&config)) {
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
            Command::Schema {
                action: SchemaAction::Check { config, dir },
            } => return schema_check(config, dir),
            Command::Run { config } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let shutdown = switchyard_router::app::shutdown_on_signals();
                switchyard_router::app::run(cfg, Some(config), shutdown).await
            }
            Command::Dlq { action } => dlq(action).await,
            Command::Consumer {
                action:
                    ConsumerAction::Rewind {
                        config,
                        consumer,
                        to,
                    },
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                async {
                    let admin = AdminClient::connect(&cfg).await?;
                    let id = admin.rewind(&consumer, &to).await?;
                    println!("consumer {consumer} rewound to {id}");
                    Ok(())
                }
                .await
            }
            Command::Reload { config } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let r = async { AdminClient::connect(&cfg).await?.reload().await }.await;
                match r {
                    Ok((status, v)) => {
                        println!("{v}");
                        if status == 200 {
                            Ok(())
                        } else {
                            Err(anyhow::anyhow!(
                                "reload failed (HTTP {status}); the previous chains keep running"
                            ))
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Command::Transform {
                action:
                    TransformAction::Test {
                        config,
                        consumer,
                        modules,
                        set,
                        event,
                        deadline,
                    },
            } => {
                let args = crate::transform::TestArgs {
                    config,
                    consumer,
                    modules,
                    set,
                    event,
                    deadline,
                };
                let mut out = std::io::stdout();
                match tokio::task::block_in_place(|| crate::transform::test(args, &mut out)) {
                    Ok(true) => Ok(()),
                    Ok(false) => return ExitCode::FAILURE,
                    Err(e) => Err(e),
                }
            }
            Command::Transform {
                action:
                    TransformAction::Diff {
                        config,
                        consumer,
                        module,
                        replace,
                        last,
                        json,
                    },
            } => {
                let args = crate::diff::DiffArgs {
                    config,
                    consumer,
                    module,
                    replace,
                    last,
                    json,
                };
                let mut out = std::io::stdout();
                return match crate::diff::diff(args, &mut out).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(2)
                    }
                };
            }
            Command::New {
                what:
                    NewWhat::Module {
                        name,
                        lang,
                        dir,
                        sdk,
                    },
            } => crate::new::new_module(&crate::new::NewArgs {
                name,
                lang,
                dir,
                sdk,
            })
            .map(|root| {
                println!(
                    "created {}: see its README.md (build.sh, then switchyard transform test)",
                    root.display()
                )
            })
            .map_err(anyhow::Error::from),
            Command::Sink { listen } => {
                crate::sink::run(listen, switchyard_router::app::shutdown_on_signals()).await
            }
            Command::Status { config, json } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                async {
                    let st = AdminClient::connect(&cfg).await?.status().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&st)?);
                    } else {
                        print!("{}", crate::admin_client::status_table(&st));
                    }
                    Ok(())
                }
                .await
            }
            Command::Policy {
                action:
                    PolicyAction::Test {
                        config,
                        consumer,
                        event,
                        consent,
                    },
            } => {
                let args = crate::privacy::PolicyTestArgs {
                    config,
                    consumer,
                    event,
                    consent,
                };
                let mut out = std::io::stdout();
                match tokio::task::block_in_place(|| crate::privacy::policy_test(args, &mut out)) {
                    Ok(true) => Ok(()),
                    Ok(false) => return ExitCode::FAILURE,
                    Err(e) => Err(e),
                }
            }
            Command::Audit {
                config,
                account,
                since,
                json,
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let args = crate::privacy::AuditArgs {
                    account,
                    since,
                    json,
                };
                let mut out = std::io::stdout();
                crate::privacy::audit(&cfg, args, &mut out)
                    .await
                    .context("audit")
            }
            Command::Mcp {
                config,
                show_payloads,
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                crate::mcp::serve_stdio(cfg, show_payloads).await
            }
            Command::Schema {
                action:
                    SchemaAction::History {
                        config,
                        source,
                        table,
                        json,
                    },
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let mut out = std::io::stdout();
                crate::schema::history(&cfg, &source, table.as_deref(), json, &mut out).await
            }
            Command::Quarantine {
                action:
                    QuarantineAction::List {
                        config,
                        source,
                        json,
                    },
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let mut out = std::io::stdout();
                crate::quarantine::list(&cfg, &source, json, &mut out).await
            }
            Command::Quarantine {
                action:
                    QuarantineAction::Replay {
                        config,
                        source,
                        id,
                        topic,
                    },
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let mut out = std::io::stdout();
                match crate::quarantine::replay(
                    &cfg,
                    &source,
                    id.as_deref(),
                    topic.as_deref(),
                    &mut out,
                )
                .await
                {
                    Ok(true) => Ok(()),
                    Ok(false) => return ExitCode::FAILURE,
                    Err(e) => Err(e),
                }
            }
            Command::Tail {
                config,
                topic,
                account,
                from,
                limit,
                no_follow,
            } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let args = crate::tail::TailArgs {
                    topic,
                    account,
                    from,
                    limit,
                    no_follow,
                };
                let mut out = std::io::stdout();
                crate::tail::tail(&cfg, args, &mut out)
                    .await
                    .context("tail")
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
