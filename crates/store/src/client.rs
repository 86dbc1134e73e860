//! The one Redis client type: standalone Redis or a Redis Cluster, chosen by
//! `redis.cluster` in the config. Nothing outside this crate names a redis
//! connection type; everything goes through [`Client`] and [`Conn`].
//!
//! Every multi-key operation of the store stays within one hash slot: a
//! partition's keys share the hash tag `{p<N>}` (see `log::Keys` and
//! `consumer::ConsumerKeys`), and each operation says which keys it touches.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value,
};

use crate::config::RedisConfig;
use crate::log::LogError;

/// A Redis client: standalone or cluster.
#[derive(Clone)]
pub enum Client {
    Standalone(redis::Client),
    Cluster(ClusterClient),
}

/// A connection from a [`Client`]. Cheap to clone (all variants multiplex).
#[derive(Clone)]
pub enum Conn {
    /// Shared and reconnecting (standalone).
    Managed(ConnectionManager),
    /// A connection of its own (standalone), for blocking reads.
    Dedicated(MultiplexedConnection),
    /// A cluster connection: routes each command to the node owning its
    /// key's slot and follows MOVED/ASK redirections.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Run a command that names no key (`CLIENT ID`, `CLIENT KILL`) on the
    /// node that owns `key`'s slot: on a cluster, the node a blocking read of
    /// `key` runs on. Standalone: the connection itself.
    pub async fn query_on_node_of<T: FromRedisValue>(
        &mut self,
        cmd: Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            Conn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key.as_bytes(), SlotAddr::Master),
                ));
                let v = c.route_command(cmd, route).await?;
                redis::from_redis_value(v).map_err(Into::into)
            }
            c => cmd.query_async(c).await,
        }
    }
}

impl Client {
    /// Build the client `cfg` describes (no connection yet).
    pub fn new(cfg: &RedisConfig) -> Result<Client, LogError> {
        switchyard_core::tls::install_crypto_provider();
        let bad_url = |e: redis::RedisError| {
            LogError::Config(format!(
                "redis.url: not a valid Redis URL ({}): {e}",
                cfg.url
            ))
        };
        let certs = match &cfg.tls {
            None => None,
            Some(t) => {
                let read = |setting: &str, p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| {
                        LogError::Config(format!("{setting}: cannot read {}: {e}", p.display()))
                    })
                };
                let root_cert = match &t.ca_file {
                    Some(p) => Some(read("redis.tls.ca_file", p)?),
                    None => None,
                };
                let client_tls = match (&t.cert_file, &t.key_file) {
                    (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                        client_cert: read("redis.tls.cert_file", c)?,
                        client_key: read("redis.tls.key_file", k)?,
                    }),
                    _ => None,
                };
                Some(redis::TlsCertificates {
                    client_tls,
                    root_cert,
                })
            }
        };
        let tls_err = |e: redis::RedisError| {
            LogError::Config(format!(
                "redis.tls: cannot use these certificates with redis.url ({}): {e}",
                cfg.url
            ))
        };
        if cfg.cluster {
            let mut b = ClusterClient::builder(vec![cfg.url.to_string()])
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(3);
            if let Some(c) = certs {
                b = b.certs(c);
            }
            return b.build().map(Client::Cluster).map_err(|e| {
                if cfg.tls.is_some() {
                    tls_err(e)
                } else {
                    bad_url(e)
                }
            });
        }
        match certs {
            None => redis::Client::open(&*cfg.url)
                .map(Client::Standalone)
                .map_err(bad_url),
            Some(c) => redis::Client::build_with_tls(&*cfg.url, c)
                .map(Client::Standalone)
                .map_err(tls_err),
        }
    }

    /// The shared connection: reconnecting, multiplexed.
    pub async fn shared(&self, timeout: Duration) -> Result<Conn, LogError> {
        Ok(match self {
            Client::Standalone(c) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                Conn::Managed(ConnectionManager::new_with_config(c.clone(), cfg).await?)
            }
            Client::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        })
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK` would
    /// stall every other command on a shared connection). It does not
    /// reconnect by itself: its owner must know when its connection changed.
    pub async fn dedicated(&self, timeout: Duration) -> Result<Conn, LogError> {
        Ok(match self {
            Client::Standalone(c) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout + Duration::from_secs(2)));
                Conn::Dedicated(c.get_multiplexed_async_connection_with_config(&cfg).await?)
            }
            Client::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        })
    }
}
