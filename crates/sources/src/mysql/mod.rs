//! MySQL/MariaDB CDC source: the row-based binlog (read as a replica with
//! `mysql_async`'s `binlog` feature) → canonical events → the log.
//!
//! Entry point: [`run`], one task per configured source. A session:
//! 1. connects over SQL and checks the server (`log_bin`, `binlog_format =
//!    ROW`, `binlog_row_image = FULL`, `server_id`, privileges), reporting
//!    everything missing with the statement or setting that fixes it;
//! 2. reads the captured tables' columns from information_schema;
//! 3. loads the source's binlog position from Redis; without one it takes
//!    the initial snapshot (tables with `snapshot = true`) or starts at the
//!    binlog's current end, and stores that position first;
//! 4. streams the binlog from the position. The position is advanced in
//!    Redis only after every event of every transaction committed up to it
//!    was appended to the log (see `stream.rs`).
//!
//! Event ids are UUIDv5 of (source, binlog file:position of the
//! transaction's start, row number in the transaction, rule number): a
//! transaction read twice (after a crash before its position was stored)
//! produces the same ids, which the log drops as duplicates.

pub mod catalog;
pub mod config;
pub mod mapping;
pub mod position;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod values;

use std::time::{Duration, Instant};
use switchyard_core::retry::Backoff;

use tokio_util::sync::CancellationToken;

pub use config::{MysqlSourceConfig, TableConfig};

use switchyard_core::event::Event;
use switchyard_store::log::{Log, LogError};
use tls::MyTls;

/// The mysql source as a [`crate::Source`] (registered in
/// [`crate::SourceConfig::task`]).
pub struct MysqlSource {
    pub name: String,
    pub cfg: MysqlSourceConfig,
}

impl crate::Source for MysqlSource {
    fn run(
        self: Box<Self>,
        log: Log,
        shutdown: CancellationToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(run(self.name, self.cfg, log, shutdown))
    }
}

/// Run the source until `shutdown`: reconnects by itself (warn + backoff)
/// after server or network failures; returns `Err` only for problems a retry
/// cannot fix (missing table or privilege, binlog settings, TLS), with a
/// message that says what to do.
pub async fn run(
    name: String,
    cfg: MysqlSourceConfig,
    log: Log,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let path = format!("sources.{name}");
    let conn = ConnParams::from_url(&cfg.url).map_err(|e| anyhow::anyhow!("{path}.url: {e}"))?;
    let opts = conn.opts(&format!("{path}.url"))?;
    let ctx = SourceCtx {
        source: &name,
        path,
        cfg: &cfg,
        log: &log,
        shutdown: &shutdown,
        conn,
        opts,
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), cfg.max_backoff);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let started = Instant::now();
        match session(&ctx).await {
            Ok(()) | Err(SessionError::Shutdown) => return Ok(()),
            Err(SessionError::LostLeadership) => {
                tracing::warn!(source = %name, "another instance leads this source now (the position write was fenced); this reader stops");
                return Ok(());
            }
            Err(SessionError::Fatal(e)) => {
                tracing::error!(source = %name, error = %format!("{e:#}"), "mysql source stopped");
                return Err(e);
            }
            Err(SessionError::Transient(e)) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(source = %name, error = %format!("{e:#}"), retry_in = ?delay,
                    "mysql source: connection lost or not ready; reconnecting");
                if !Backoff::sleep(delay, &shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// One connection attempt: checks, catalog, position (or snapshot), streaming.
async fn session(ctx: &SourceCtx<'_>) -> Result<(), SessionError> {
    let mut sql = tokio::select! {
        r = ctx.connect() => r?,
        _ = ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
    };
    let server = catalog::check_server(&mut sql, ctx).await?;
    let tables = catalog::resolve_tables(&mut sql, ctx, &server).await?;
    let start = match position::load(ctx.log, ctx.source)
        .await
        .map_err(SessionError::log)?
    {
        Some(p) => p,
        None => {
            let p = if tables.iter().any(|t| t.snapshot) {
                snapshot::snapshot(ctx, &mut sql, &server, &tables).await?
            } else {
                let p = catalog::current_position(&mut sql, ctx, &server).await?;
                tracing::info!(source = ctx.source, position = %p, "no stored position: starting at the binlog's end");
                p
            };
            store_position(ctx, &p).await?;
            p
        }
    };
    stream::stream(ctx, sql, &server, tables, start).await
}

/// Store the position, retrying while Redis is unavailable.
pub async fn store_position(
    ctx: &SourceCtx<'_>,
    p: &position::BinlogPos,
) -> Result<(), SessionError> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match position::store(ctx.log, ctx.source, p).await {
            Ok(()) => return Ok(()),
            Err(e @ (LogError::Unavailable(_) | LogError::Tls(_))) => {
                let delay = backoff.next_delay();
                tracing::warn!(source = ctx.source, error = %e, retry_in = ?delay, "cannot store the binlog position; retrying");
                if !Backoff::sleep(delay, &ctx.shutdown).await {
                    return Err(SessionError::Shutdown);
                }
            }
            Err(e) => return Err(SessionError::log(e)),
        }
    }
}

/// How a session ended, when not by shutdown.
#[derive(Debug)]
pub enum SessionError {
    /// Retrying cannot help: `run` returns it.
    Fatal(anyhow::Error),
    /// Reconnect with backoff.
    Transient(anyhow::Error),
    /// Shutdown was requested.
    Shutdown,
    /// Another instance took the source's leader lease (a position write
    /// was fenced): stop reading; `lead_and_run` stands by.
    LostLeadership,
}

/// MySQL error codes a retry cannot fix.
const ER_DBACCESS_DENIED: u16 = 1044;
const ER_ACCESS_DENIED: u16 = 1045;
const ER_BAD_DB: u16 = 1049;
const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;

impl SessionError {
    pub fn from_my(e: mysql_async::Error) -> SessionError {
        use mysql_async::Error as E;
        match &e {
            E::Server(s) => match s.code {
                ER_DBACCESS_DENIED => SessionError::Fatal(anyhow::anyhow!(
                    "MySQL refused the source's connection: {} (error {}); the source's user needs \
                     GRANT SELECT ON the url's database (or on each captured table in it)",
                    s.message, s.code
                )),
                ER_ACCESS_DENIED | ER_BAD_DB => {
                    SessionError::Fatal(anyhow::anyhow!(
                        "MySQL refused the source's connection: {} (error {}); check the url's user, password and database",
                        s.message, s.code
                    ))
                }
                ER_SPECIFIC_ACCESS_DENIED | ER_TABLEACCESS_DENIED => {
                    SessionError::Fatal(anyhow::anyhow!(
                        "MySQL refused a statement of the source: {} (error {}); the source's user needs \
                         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* and GRANT SELECT ON each captured table",
                        s.message, s.code
                    ))
                }
                ER_MASTER_FATAL_READING_BINLOG => SessionError::Fatal(anyhow::anyhow!(
                    "the server cannot send the binlog from the stored position: {} (error {}); \
                     if the binlog was purged, the changes since are lost to this source: delete the \
                     stored position (see `switchyard` README, MySQL source) to snapshot again",
                    s.message, s.code
                )),
                _ => SessionError::Transient(anyhow::anyhow!("mysql: {e}")),
            },
            E::Io(mysql_async::IoError::Tls(_)) => SessionError::Fatal(anyhow::anyhow!(
                "TLS to MySQL failed ({}); check ssl-mode and ssl-ca in the source url \
                 (VERIFY_IDENTITY also needs the url's host name in the server certificate)",
                switchyard_core::tls::chain_text(&e)
            )),
            E::Driver(d) if d.to_string().contains("TLS") || d.to_string().contains("SSL") => {
                SessionError::Fatal(anyhow::anyhow!(
                    "TLS to MySQL failed ({d}); the server has no TLS: enable it (ssl_cert, ssl_key) or set ssl-mode=DISABLED in the source url"
                ))
            }
            _ => {
                let text = switchyard_core::tls::chain_text(&e);
                if let Some(f) = switchyard_core::tls::tls_failure(&e) {
                    return SessionError::Fatal(anyhow::anyhow!(
                        "TLS to MySQL failed ({f:?}: {text}); check ssl-mode, ssl-ca, ssl-cert and ssl-key in the source url"
                    ));
                }
                SessionError::Transient(anyhow::anyhow!("mysql: {text}"))
            }
        }
    }

    pub fn log(e: LogError) -> SessionError {
        match e {
            LogError::Config(_) | LogError::PartitionMismatch { .. } => {
                SessionError::Fatal(anyhow::anyhow!("{e}"))
            }
            LogError::Fenced => SessionError::LostLeadership,
            e => SessionError::Transient(anyhow::anyhow!("log: {e}")),
        }
    }
}

/// Connection settings of a source, from its URL.
#[derive(Clone)]
pub struct ConnParams {
    /// The URL without its TLS parameters (mysql_async parses it).
    url: String,
    pub tls: MyTls,
    pub user: String,
    pub database: Option<String>,
}

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnParams")
            .field("url", &switchyard_core::secret::redact_url(&self.url))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnParams {
    pub fn from_url(url: &str) -> Result<ConnParams, String> {
        if !url.starts_with("mysql://") {
            return Err("must be a mysql:// URL (mysql://user:password@host:port/database)".into());
        }
        let (rest, tls) = MyTls::split(url)?;
        let opts = mysql_async::Opts::from_url(&rest)
            .map_err(|e| format!("not a valid MySQL URL: {e}"))?;
        Ok(ConnParams {
            user: opts.user().unwrap_or_default().to_owned(),
            database: opts.db_name().map(str::to_owned),
            url: rest,
            tls,
        })
    }

    /// mysql_async options: TLS as configured, no silent switch to the Unix
    /// socket (unless the URL asks for it).
    pub fn opts(&self, setting: &str) -> anyhow::Result<mysql_async::Opts> {
        let opts = mysql_async::Opts::from_url(&self.url)
            .map_err(|e| anyhow::anyhow!("{setting}: not a valid MySQL URL: {e}"))?;
        let ssl = self.tls.ssl_opts(setting)?;
        let mut b = mysql_async::OptsBuilder::from_opts(opts).ssl_opts(ssl);
        if !self.url.contains("prefer_socket") {
            b = b.prefer_socket(false);
        }
        Ok(b.into())
    }
}

/// What a session needs.
pub struct SourceCtx<'a> {
    pub source: &'a str,
    /// `sources.<name>`
    pub path: String,
    pub cfg: &'a MysqlSourceConfig,
    pub log: &'a Log,
    pub shutdown: &'a CancellationToken,
    pub conn: ConnParams,
    pub opts: mysql_async::Opts,
}

impl SourceCtx<'_> {
    /// A new SQL connection with the session settings every query relies on.
    pub async fn connect(&self) -> Result<mysql_async::Conn, SessionError> {
        use mysql_async::prelude::Queryable;
        let mut c = mysql_async::Conn::new(self.opts.clone())
            .await
            .map_err(SessionError::from_my)?;
        c.query_drop("SET time_zone = '+00:00'")
            .await
            .map_err(SessionError::from_my)?;
        Ok(c)
    }
}

/// Append `events`, retrying (with backoff) while the log is unavailable.
pub async fn append_retry(
    log: &Log,
    source: &str,
    shutdown: &CancellationToken,
    events: &[Event],
) -> Result<(), SessionError> {
    if events.is_empty() {
        return Ok(());
    }
    // Events their schema refuses go to the source's quarantine first.
    let (events, refused) = crate::schema::split_cdc(events);
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let written = match crate::schema::quarantine(log, source, &refused).await {
            Ok(()) if events.is_empty() => Ok(Vec::new()),
            Ok(()) => log.append(&events).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(appended) => {
                let dups = appended.iter().filter(|a| a.stream_id.is_none()).count();
                if dups > 0 {
                    tracing::debug!(
                        source,
                        duplicates = dups,
                        "events already in the log (re-read changes)"
                    );
                }
                return Ok(());
            }
            Err(LogError::Unavailable(e) | LogError::Tls(e)) => {
                let delay = backoff.next_delay();
                tracing::warn!(source, error = %e, retry_in = ?delay, "log unavailable; retrying append");
                if !Backoff::sleep(delay, &shutdown).await {
                    return Err(SessionError::Shutdown);
                }
            }
            Err(e) => {
                return Err(SessionError::Transient(anyhow::anyhow!(
                    "appending to the log failed: {e}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_params_from_urls() {
        let p = ConnParams::from_url("mysql://alice:s3cret@db.example:3307/shop").unwrap();
        assert_eq!(
            (p.user.as_str(), p.database.as_deref()),
            ("alice", Some("shop"))
        );
        assert!(!format!("{p:?}").contains("s3cret"));
        let p = ConnParams::from_url("mysql://u@h").unwrap();
        assert_eq!(p.database, None);
        assert!(ConnParams::from_url("postgres://u@h/db").is_err());
        assert!(ConnParams::from_url("mysql://u@h/db?ssl-mode=nope").is_err());
    }
}
