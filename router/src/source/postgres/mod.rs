//! Postgres CDC source: logical replication (pgoutput) → canonical events →
//! the log. See ARCHITECTURE-cdc.md in this folder.
//!
//! Entry point: [`run`]. One task per configured source.

pub mod catalog;
pub mod config;
pub mod mapping;
pub mod pgoutput;
pub mod snapshot;
pub mod stream;
pub mod values;

use std::time::{Duration, Instant};

use pgwire_replication::{PgWireError, ReplicationConfig, TlsConfig};
use tokio_util::sync::CancellationToken;

pub use config::{PostgresSourceConfig, RuleConfig, TableConfig};

use crate::event::Event;
use crate::log::{Log, LogError};
use pgoutput::Lsn;

/// Run the source until `shutdown`: reconnects by itself (warn + backoff)
/// after Postgres or network failures; returns `Err` only for problems a
/// retry cannot fix (missing table, replica identity, wal_level, auth…),
/// with a message that says what to do.
pub async fn run(
    name: String,
    cfg: PostgresSourceConfig,
    log: Log,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let path = format!("sources.{name}");
    let conn = ConnParams::from_url(&cfg.url).map_err(|e| anyhow::anyhow!("{path}.url: {e}"))?;
    let ctx = SourceCtx {
        source: &name,
        path,
        cfg: &cfg,
        log: &log,
        shutdown: &shutdown,
        conn,
    };
    let min_delay = Duration::from_millis(100);
    let mut delay = min_delay;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let started = Instant::now();
        match session(&ctx).await {
            Ok(()) | Err(SessionError::Shutdown) => return Ok(()),
            Err(SessionError::Fatal(e)) => {
                tracing::error!(source = %name, error = %format!("{e:#}"), "postgres source stopped");
                return Err(e);
            }
            Err(SessionError::Transient(e)) => {
                if started.elapsed() > Duration::from_secs(30) {
                    delay = min_delay;
                }
                tracing::warn!(source = %name, error = %format!("{e:#}"), retry_in = ?delay,
                    "postgres source: connection lost or not ready; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                delay = (delay * 2).min(cfg.max_backoff);
            }
        }
    }
}

/// One connection attempt: checks, setup, optional snapshot, streaming.
async fn session(ctx: &SourceCtx<'_>) -> Result<(), SessionError> {
    let connect = tokio_postgres::connect(&ctx.cfg.url, tokio_postgres::NoTls);
    let (client, connection) = tokio::select! {
        r = connect => r.map_err(SessionError::from_pg)?,
        _ = ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
    };
    let conn_task = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres SQL connection ended");
        }
    }));

    catalog::set_session(&client).await?;
    catalog::check_wal_level(&client).await?;
    let tables = catalog::resolve_tables(&client, ctx.source, &ctx.path, ctx.cfg).await?;
    catalog::ensure_publication(&client, ctx.source, &ctx.path, ctx.cfg, &tables).await?;
    let confirmed = match catalog::slot_state(&client, &ctx.path, &ctx.cfg.slot).await? {
        catalog::SlotState::Ready { confirmed_flush } => confirmed_flush,
        catalog::SlotState::Missing => {
            if tables.iter().any(|t| t.snapshot) {
                snapshot::create_slot_with_snapshot(ctx, &client, &tables).await?
            } else {
                let lsn = catalog::create_slot(&client, &ctx.cfg.slot).await?;
                tracing::info!(source = ctx.source, slot = ctx.cfg.slot, lsn = %lsn, "created replication slot");
                lsn
            }
        }
    };
    drop(client);
    drop(conn_task);
    stream::stream(ctx, &tables, confirmed).await
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
}

impl SessionError {
    pub fn from_pg(e: tokio_postgres::Error) -> SessionError {
        let msg = catalog::pg_message(&e);
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            // 28xxx: authentication / authorization; 3D000: database does not exist;
            // 42501: insufficient privilege.
            if code.starts_with("28") || code == "3D000" || code == "42501" {
                return SessionError::Fatal(anyhow::anyhow!(
                    "Postgres refused the source's connection or query: {msg} (SQLSTATE {code}); check the url, the user's privileges (it needs REPLICATION) and pg_hba.conf"
                ));
            }
        }
        SessionError::Transient(anyhow::anyhow!("postgres: {msg}"))
    }

    pub fn from_wire(e: PgWireError) -> SessionError {
        let msg = e.to_string();
        let lower = msg.to_ascii_lowercase();
        if e.is_auth()
            || lower.contains("must be superuser or replication role")
            || lower.contains("permission denied")
            || lower.contains("password authentication failed")
            || lower.contains("no pg_hba.conf entry")
        {
            return SessionError::Fatal(anyhow::anyhow!(
                "Postgres refused the replication connection: {msg}; the user needs the REPLICATION attribute and a pg_hba.conf entry allowing it"
            ));
        }
        SessionError::Transient(anyhow::anyhow!("replication connection: {msg}"))
    }
}

/// Connection parameters for the replication connection, from the URL.
#[derive(Debug, Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

impl ConnParams {
    pub fn from_url(url: &str) -> Result<ConnParams, String> {
        let c: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("not a valid Postgres connection string: {e}"))?;
        if matches!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require) {
            return Err("sslmode=require is not supported by the CDC source yet (connections are unencrypted)".into());
        }
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.to_string_lossy().into_owned(),
            None => match c.get_hostaddrs().first() {
                Some(a) => a.to_string(),
                None => "localhost".into(),
            },
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into());
        let password = c
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let dbname = c
            .get_dbname()
            .map(str::to_owned)
            .unwrap_or_else(|| user.clone());
        Ok(ConnParams {
            host,
            port,
            user,
            password,
            dbname,
        })
    }
}

/// What a session needs.
pub struct SourceCtx<'a> {
    pub source: &'a str,
    /// `sources.<name>`
    pub path: String,
    pub cfg: &'a PostgresSourceConfig,
    pub log: &'a Log,
    pub shutdown: &'a CancellationToken,
    pub conn: ConnParams,
}

impl SourceCtx<'_> {
    /// Replication connection settings for `slot`, starting at `start`
    /// (0 = the slot's confirmed position).
    pub fn replication_config(&self, slot: &str, start: Lsn) -> ReplicationConfig {
        ReplicationConfig::new(
            self.conn.host.clone(),
            self.conn.user.clone(),
            self.conn.password.clone(),
            self.conn.dbname.clone(),
            slot.to_owned(),
            self.cfg.publication.clone(),
        )
        .with_port(self.conn.port)
        .with_tls(TlsConfig::disabled())
        .with_start_lsn(pgwire_replication::Lsn::from_u64(start.0))
        .with_status_interval(self.cfg.status_interval)
        .with_wakeup_interval(Duration::from_secs(5))
        .with_buffer_size(2048)
        .with_options(values::startup_options())
        .with_application_name(format!("switchyard-{}", self.source))
    }
}

/// Append `events`, retrying (with backoff) while the log is unavailable.
/// Returns `Shutdown` if shutdown is requested while retrying.
pub async fn append_with_retry(ctx: &SourceCtx<'_>, events: &[Event]) -> Result<(), SessionError> {
    append_retry(ctx.log, ctx.source, ctx.shutdown, events).await
}

/// [`append_with_retry`] without the context (for spawned append tasks).
pub async fn append_retry(
    log: &Log,
    source: &str,
    shutdown: &CancellationToken,
    events: &[Event],
) -> Result<(), SessionError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match log.append(events).await {
            Ok(appended) => {
                let dups = appended.iter().filter(|a| a.stream_id.is_none()).count();
                if dups > 0 {
                    tracing::debug!(
                        source,
                        duplicates = dups,
                        "events already in the log (replayed changes)"
                    );
                }
                return Ok(());
            }
            Err(LogError::Unavailable(e)) => {
                tracing::warn!(source, error = %e, retry_in = ?delay, "log unavailable; retrying append");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(SessionError::Shutdown),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            #[allow(unreachable_patterns)]
            Err(e) => {
                return Err(SessionError::Transient(anyhow::anyhow!(
                    "appending to the log failed: {e}"
                )));
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_params_from_urls() {
        let p = ConnParams::from_url("postgres://alice:s3cret@db.example:6543/crm").unwrap();
        assert_eq!(
            (
                p.host.as_str(),
                p.port,
                p.user.as_str(),
                p.password.as_str(),
                p.dbname.as_str()
            ),
            ("db.example", 6543, "alice", "s3cret", "crm")
        );
        let p = ConnParams::from_url("host=/tmp/pg port=5544 user=bob dbname=x").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_str(), p.dbname.as_str()),
            ("/tmp/pg", 5544, "bob", "x")
        );
        let p = ConnParams::from_url("postgres://u@h").unwrap();
        assert_eq!(
            (p.port, p.dbname.as_str(), p.password.as_str()),
            (5432, "u", "")
        );
        assert!(ConnParams::from_url("postgres://u@h/db?sslmode=require").is_err());
        assert!(ConnParams::from_url("postgres://[::1").is_err());
    }
}
