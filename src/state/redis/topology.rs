//! How a replica reaches the Redis master that holds the shared state, in each of the three modes of
//! `state`: one Redis (`url`), a master that Redis Sentinel manages (`sentinel`: asked of the sentinels,
//! checked with `ROLE`, asked again after any failed call, so a failover is followed), or a Redis Cluster
//! (`cluster`: the cluster client follows MOVED/ASK and slot moves itself).
//!
//! Two kinds of connection: the shared one for commands (writes, "seen once" records), and a dedicated one
//! per feed session, whose response timeout allows for a blocking `XREAD`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo as _, Pipeline, RedisFuture, RedisResult,
    TlsMode, Value,
};

use super::super::Health;
use crate::config::{Secret, StateConfig};

/// Which of the three `state` modes is in use (the `mode` label of `portcullis_state_redis_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Standalone,
    Sentinel,
    Cluster,
}

// === impl Mode ===

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Sentinel => "sentinel",
            Mode::Cluster => "cluster",
        }
    }
}

/// A connection of any mode; every command goes through [`ConnectionLike`].
#[derive(Clone)]
pub(super) enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Kind {
    Standalone {
        client: redis::Client,
        manager: ConnectionManager,
    },
    Sentinel {
        /// Holds the connections to the sentinels; one discovery at a time (calls that find no master
        /// connection wait for it, within their timeout).
        sentinel: Box<tokio::sync::Mutex<Sentinel>>,
        master_name: String,
        node: Box<SentinelNodeConnectionInfo>,
        /// The connection to the master found last; `None` after a failed call, so the next one asks the
        /// sentinels again. Read without a lock on the request path.
        current: ArcSwapOption<MultiplexedConnection>,
    },
    Cluster {
        commands: Box<ClusterClient>,
        feed: Box<ClusterClient>,
        /// Made at the first call (one at a time), then shared.
        current: ArcSwapOption<ClusterConnection>,
        connecting: tokio::sync::Mutex<()>,
    },
}

pub(super) struct Topology {
    kind: Kind,
    timeout: Duration,
    /// The response timeout of a feed connection: a blocking read plus `timeout`.
    feed_timeout: Duration,
    health: Arc<Health>,
}

// === impl Topology ===

impl Topology {
    /// Reads the mode of `config`; no connection is made yet.
    pub(super) fn new(
        config: &StateConfig,
        password: Option<&Secret>,
        block: Duration,
        health: Arc<Health>,
    ) -> RedisResult<Topology> {
        let password = password.map(|p| String::from_utf8_lossy(p.expose()).into_owned());
        let timeout = Duration::from_millis(config.timeout_ms);
        let feed_timeout = block + timeout;
        let kind = if let Some(sentinel) = &config.sentinel {
            let tls = sentinel
                .urls
                .first()
                .is_some_and(|u| u.starts_with("rediss://"));
            let mut redis_info = redis::RedisConnectionInfo::default();
            if let Some(password) = &password {
                redis_info = redis_info.set_password(password.clone());
            }
            let mut node =
                SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
            if tls {
                node = node.set_tls_mode(TlsMode::Secure);
            }
            Kind::Sentinel {
                sentinel: Box::new(tokio::sync::Mutex::new(Sentinel::build(
                    sentinel.urls.clone(),
                )?)),
                master_name: sentinel.master_name.clone(),
                node: Box::new(node),
                current: ArcSwapOption::empty(),
            }
        } else if let Some(cluster) = &config.cluster {
            let client = |response: Duration| {
                let mut builder = ClusterClient::builder(cluster.urls.clone())
                    .connection_timeout(timeout)
                    .response_timeout(response)
                    .retries(3)
                    .max_retry_wait(200);
                if let Some(password) = &password {
                    builder = builder.password(password.clone());
                }
                builder.build()
            };
            Kind::Cluster {
                commands: Box::new(client(timeout)?),
                feed: Box::new(client(feed_timeout)?),
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
            }
        } else {
            let url = config.url.as_deref().unwrap_or_default();
            let mut info = url.into_connection_info()?;
            if let Some(password) = password {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            let client = redis::Client::open(info)?;
            let manager = client.get_connection_manager_lazy(
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1)),
            )?;
            health.set_master(Some(client.get_connection_info().addr().to_string()));
            Kind::Standalone { client, manager }
        };
        Ok(Topology {
            kind,
            timeout,
            feed_timeout,
            health,
        })
    }

    pub(super) fn mode(&self) -> Mode {
        match self.kind {
            Kind::Standalone { .. } => Mode::Standalone,
            Kind::Sentinel { .. } => Mode::Sentinel,
            Kind::Cluster { .. } => Mode::Cluster,
        }
    }

    /// The connection for commands. With Sentinel, the master is asked of the sentinels when there is no
    /// connection to it (at start, and after any failed call).
    pub(super) async fn commands(&self) -> RedisResult<Conn> {
        match &self.kind {
            Kind::Standalone { manager, .. } => Ok(Conn::Manager(manager.clone())),
            Kind::Sentinel {
                sentinel, current, ..
            } => {
                if let Some(conn) = &*current.load() {
                    return Ok(Conn::Multiplexed(MultiplexedConnection::clone(conn)));
                }
                let mut sentinel = sentinel.lock().await;
                if let Some(conn) = &*current.load() {
                    return Ok(Conn::Multiplexed(MultiplexedConnection::clone(conn)));
                }
                let conn = self.master(&mut sentinel, self.timeout).await?;
                current.store(Some(Arc::new(conn.clone())));
                Ok(Conn::Multiplexed(conn))
            }
            Kind::Cluster {
                commands,
                current,
                connecting,
                ..
            } => {
                if let Some(conn) = &*current.load() {
                    return Ok(Conn::Cluster(ClusterConnection::clone(conn)));
                }
                let _one = connecting.lock().await;
                if let Some(conn) = &*current.load() {
                    return Ok(Conn::Cluster(ClusterConnection::clone(conn)));
                }
                let conn = commands.get_async_connection().await?;
                current.store(Some(Arc::new(conn.clone())));
                Ok(Conn::Cluster(conn))
            }
        }
    }

    /// A call on the commands connection failed: with Sentinel, the next one asks the sentinels again
    /// (the master may have changed, or be a replica now: `READONLY`).
    pub(super) fn failed(&self) {
        if let Kind::Sentinel { current, .. } = &self.kind {
            current.store(None);
        }
    }

    /// A new connection for one feed session (its own, as a blocking read holds it). With Sentinel the
    /// master is asked of the sentinels each time, and the commands connection follows a new master.
    pub(super) async fn feed(&self) -> RedisResult<Conn> {
        match &self.kind {
            Kind::Standalone { client, .. } => client
                .get_multiplexed_async_connection_with_config(&self.config(self.feed_timeout))
                .await
                .map(Conn::Multiplexed),
            Kind::Sentinel {
                sentinel, current, ..
            } => {
                let mut sentinel = sentinel.lock().await;
                let conn = self.master(&mut sentinel, self.feed_timeout).await?;
                // The sentinels have just named the master: the commands connection follows.
                current.store(None);
                Ok(Conn::Multiplexed(conn))
            }
            Kind::Cluster { feed, .. } => feed.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// With Cluster, notes which node serves the slot of `key` (the master in use for the denylist),
    /// from `CLUSTER SLOTS`; a change is a failover seen.
    pub(super) async fn note_cluster_master(&self, conn: &mut Conn, key: &str) -> RedisResult<()> {
        if !matches!(self.kind, Kind::Cluster { .. }) {
            return Ok(());
        }
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(conn)
            .await?;
        let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        let owner = slots.iter().find_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let number = |v: &Value| match v {
                Value::Int(n) => Some(*n),
                _ => None,
            };
            let (start, end) = (number(parts.first()?)?, number(parts.get(1)?)?);
            if !(start..=end).contains(&slot) {
                return None;
            }
            let Value::Array(node) = parts.get(2)? else {
                return None;
            };
            let host = match node.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            Some(format!("{host}:{}", number(node.get(1)?)?))
        });
        if let Some(owner) = owner {
            self.health.set_master(Some(owner));
        }
        Ok(())
    }

    /// Asks the sentinels for the master (checked with `ROLE`) and connects to it.
    async fn master(
        &self,
        sentinel: &mut Sentinel,
        response_timeout: Duration,
    ) -> RedisResult<MultiplexedConnection> {
        let Kind::Sentinel {
            master_name, node, ..
        } = &self.kind
        else {
            unreachable!("only asked in sentinel mode");
        };
        let client = sentinel.async_master_for(master_name, Some(node)).await?;
        let address = client.get_connection_info().addr().to_string();
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config(response_timeout))
            .await?;
        self.health.set_master(Some(address));
        Ok(conn)
    }

    fn config(&self, response_timeout: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout))
    }
}
