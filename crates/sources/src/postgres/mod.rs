//! Postgres CDC source: logical replication (pgoutput) → canonical events →
//! the log. See ARCHITECTURE-cdc.md in this folder.
//!
//! Entry point: [`run`]. One task per configured source.

pub mod catalog;
pub mod config;
pub mod mapping;
pub mod monitor;
pub mod pgoutput;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod values;

use std::time::{Duration, Instant};
use switchyard_core::retry::Backoff;

use pgwire_replication::{PgWireError, ReplicationConfig};
use tokio_util::sync::CancellationToken;

pub use config::{PostgresSourceConfig, RuleConfig, TableConfig};

use pgoutput::Lsn;
use switchyard_core::event::Event;
use switchyard_core::tls::TlsFailure;
use switchyard_store::log::{Log, LogError};
use tls::{PgTls, SslMode};

/// The postgres source as a [`crate::Source`] (registered in
/// [`crate::SourceConfig::task`]).
pub struct PostgresSource {
    pub name: String,
    pub cfg: PostgresSourceConfig,
}

impl crate::Source for PostgresSource {
    fn run(
        self: Box<Self>,
        log: Log,
        shutdown: CancellationToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(run(self.name, self.cfg, log, shutdown))
    }
}

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
    let sql_tls = match conn.tls.mode {
        SslMode::Disable => None,
        _ => Some(conn.tls.client_config(&format!("{path}.url"))?),
    };
    let ctx = SourceCtx {
        source: &name,
        path,
        cfg: &cfg,
        log: &log,
        shutdown: &shutdown,
        conn,
        sql_tls,
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), cfg.max_backoff);
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
            Err(SessionError::Tls { failure, message }) => {
                let e = anyhow::anyhow!("{}", tls_hint(&ctx.path, failure, &message));
                tracing::error!(source = %name, error = %e, "postgres source stopped");
                return Err(e);
            }
            Err(SessionError::Transient(e)) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(source = %name, error = %format!("{e:#}"), retry_in = ?delay,
                    "postgres source: connection lost or not ready; reconnecting");
                if !Backoff::sleep(delay, &shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// One connection attempt: checks, setup, optional snapshot, streaming.
async fn session(ctx: &SourceCtx<'_>) -> Result<(), SessionError> {
    let (client, conn_task) = tokio::select! {
        r = connect_sql(ctx) => r?,
        _ = ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
    };

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

/// The SQL connection (TLS as the URL says), its connection task aborted on drop.
async fn connect_sql(
    ctx: &SourceCtx<'_>,
) -> Result<(tokio_postgres::Client, AbortOnDrop), SessionError> {
    fn spawn<F>(connection: F) -> AbortOnDrop
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres SQL connection ended");
            }
        }))
    }
    match &ctx.sql_tls {
        None => {
            let (client, connection) = ctx
                .conn
                .sql
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(SessionError::from_pg)?;
            Ok((client, spawn(connection)))
        }
        Some(cfg) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(cfg.clone());
            let (client, connection) = ctx
                .conn
                .sql
                .connect(tls)
                .await
                .map_err(SessionError::from_pg)?;
            Ok((client, spawn(connection)))
        }
    }
}

/// What to do about a TLS failure with Postgres, naming the setting.
fn tls_hint(path: &str, failure: TlsFailure, message: &str) -> String {
    match failure {
        TlsFailure::ServerCertificate => format!(
            "{path}.url: TLS to Postgres failed: the server's certificate was rejected ({message}); \
             set sslrootcert in {path}.url to the CA certificate that signed it \
             (sslmode=verify-full also requires the URL's host name in the certificate)"
        ),
        TlsFailure::ClientCertificate => format!(
            "{path}.url: TLS to Postgres failed: the server rejected our client certificate ({message}); \
             set sslcert and sslkey in {path}.url to a certificate the server trusts"
        ),
        TlsFailure::Handshake => format!(
            "{path}.url: TLS to Postgres failed ({message}); check sslmode in {path}.url \
             (sslmode=require and verify-* need `ssl = on` on the server; use sslmode=disable for a server without TLS)"
        ),
    }
}

/// How a session ended, when not by shutdown.
#[derive(Debug)]
pub enum SessionError {
    /// Retrying cannot help: `run` returns it.
    Fatal(anyhow::Error),
    /// TLS with Postgres failed (certificates, or TLS refused): `run` stops
    /// the source with a message naming the setting.
    Tls {
        failure: TlsFailure,
        message: String,
    },
    /// Reconnect with backoff.
    Transient(anyhow::Error),
    /// Shutdown was requested.
    Shutdown,
}

impl SessionError {
    pub fn from_pg(e: tokio_postgres::Error) -> SessionError {
        let msg = catalog::pg_message(&e);
        let tls = switchyard_core::tls::tls_failure(&e).or_else(|| {
            msg.contains("error performing TLS handshake")
                .then_some(TlsFailure::Handshake)
        });
        if let Some(failure) = tls {
            return SessionError::Tls {
                failure,
                message: switchyard_core::tls::chain_text(&e),
            };
        }
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
        let tls = switchyard_core::tls::tls_failure(&e)
            .or_else(|| matches!(e, PgWireError::Tls(_)).then_some(TlsFailure::Handshake));
        if let Some(failure) = tls {
            return SessionError::Tls {
                failure,
                message: msg,
            };
        }
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

/// Connection settings of a source, from its URL: the SQL connection's
/// config (TLS parameters taken out, see [`tls`]), the replication
/// connection's parameters, and the TLS settings of both.
#[derive(Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    /// TLS for both connections (disabled for a Unix socket).
    pub tls: PgTls,
    /// The SQL connection's config.
    pub sql: tokio_postgres::Config,
}

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnParams {
    pub fn from_url(url: &str) -> Result<ConnParams, String> {
        let (rest, tls) = PgTls::split(url)?;
        let mut c: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| format!("not a valid Postgres connection string: {e}"))?;
        #[cfg(unix)]
        let unix_socket = matches!(
            c.get_hosts().first(),
            Some(tokio_postgres::config::Host::Unix(_))
        );
        #[cfg(not(unix))]
        let unix_socket = false;
        let tls = tls.for_host(unix_socket);
        c.ssl_mode(tls.tokio_mode());
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
            tls,
            sql: c,
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
    /// rustls config of the SQL connection (`None`: sslmode=disable).
    pub sql_tls: Option<rustls::ClientConfig>,
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
        .with_tls(self.conn.tls.replication(&self.conn.host))
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
                switchyard_core::metrics::ingest_events(
                    source,
                    (appended.len() - dups) as u64,
                    dups as u64,
                );
                if dups > 0 {
                    tracing::debug!(
                        source,
                        duplicates = dups,
                        "events already in the log (replayed changes)"
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
        let p = ConnParams::from_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem")
            .unwrap();
        assert_eq!(p.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            p.sql.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert!(!format!(
            "{:?}",
            ConnParams::from_url("postgres://u:s3cret@h/db").unwrap()
        )
        .contains("s3cret"));
        // A Unix socket never uses TLS (as in libpq).
        let p = ConnParams::from_url("host=/tmp/pg user=bob sslmode=require").unwrap();
        assert_eq!(p.tls.mode, SslMode::Disable);
        assert!(ConnParams::from_url("postgres://[::1").is_err());
    }
}
