//! Redis as the shared backend, in any of the three modes of [`topology`]. The keys:
//! - `<tag>revocations`: a hash of every live denylist entry (the table a replica reads in full);
//! - `<tag>feed`: a stream of every change, in order (`XADD … MAXLEN ~`), that each replica reads with a
//!   blocking `XREAD` from the last entry it applied ([`feed`]);
//! - `<tag>epoch`: set once, so a new or emptied Redis is noticed and refilled from a replica's copy;
//! - `<prefix><namespace>:<hex digest>`: one "seen once" record (`SET NX PX`), a single-key operation.
//!
//! `<tag>` is the key prefix, and with Cluster the prefix in a hash tag (`{portcullis:}`) unless it holds
//! one already, so the keys one operation touches share a slot. Changes are also published on
//! `<prefix>revocations` (not with Cluster), for replicas of earlier versions during a rolling upgrade.

mod feed;
mod topology;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{AsyncCommands as _, FromRedisValue};
use tokio_util::sync::CancellationToken;

use self::topology::{Conn, Topology};
use super::{Health, StateError};
use crate::clock::Clock;
use crate::config::{Secret, StateConfig};
use crate::revocation::{Change, Denylist, Entry};

pub(crate) use self::topology::Mode;

/// How long one blocking read of the feed waits for a change before it is asked again; a dead link is
/// noticed within this plus `timeout_ms`.
const BLOCK: Duration = Duration::from_secs(1);

/// The feed keeps about this many changes (`XADD MAXLEN ~`); a replica that reconnects reads the whole
/// table anyway, so the length only bounds memory.
const FEED_LENGTH: usize = 100_000;

/// The names of the keys.
struct Keys {
    prefix: String,
    hash: String,
    feed: String,
    epoch: String,
    /// The pub/sub channel of earlier versions; `None` with Cluster.
    channel: Option<String>,
}

// === impl Keys ===

impl Keys {
    fn new(prefix: &str, mode: Mode) -> Keys {
        let tag = if mode == Mode::Cluster && !has_hash_tag(prefix) {
            format!("{{{prefix}}}")
        } else {
            prefix.to_owned()
        };
        Keys {
            prefix: prefix.to_owned(),
            hash: format!("{tag}revocations"),
            feed: format!("{tag}feed"),
            epoch: format!("{tag}epoch"),
            channel: (mode != Mode::Cluster).then(|| format!("{prefix}revocations")),
        }
    }

    fn seen(&self, namespace: &str, digest: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + namespace.len() + 65);
        key.push_str(&self.prefix);
        key.push_str(namespace);
        key.push(':');
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
        key
    }
}

/// Whether Redis Cluster would hash only part of `key`: a `{` followed later by a `}` with something
/// between them.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// What the request path and the feed share: the connections, the key names, and the changes not yet
/// written.
struct Store {
    topology: Topology,
    keys: Keys,
    timeout: Duration,
    health: Arc<Health>,
    /// Changes made here while Redis could not take them; written as soon as the feed has a connection.
    pending: Mutex<Vec<Change>>,
}

pub(super) struct RedisState {
    store: Arc<Store>,
    resync: Duration,
}

// === impl RedisState ===

impl RedisState {
    pub(super) fn new(
        config: &StateConfig,
        password: Option<&Secret>,
        health: Arc<Health>,
    ) -> Result<RedisState, redis::RedisError> {
        let topology = Topology::new(config, password, BLOCK, Arc::clone(&health))?;
        let keys = Keys::new(&config.key_prefix, topology.mode());
        // The feed lag counts from start until the feed first answers.
        health.heard();
        Ok(RedisState {
            store: Arc::new(Store {
                topology,
                keys,
                timeout: Duration::from_millis(config.timeout_ms),
                health,
                pending: Mutex::default(),
            }),
            resync: Duration::from_secs(config.resync_seconds),
        })
    }

    pub(super) fn mode(&self) -> Mode {
        self.store.topology.mode()
    }

    /// Starts the feed task until `cancel`.
    pub(super) fn spawn(&self, denylist: Arc<Denylist>, clock: Clock, cancel: &CancellationToken) {
        let feed = feed::Feed::new(Arc::clone(&self.store), denylist, clock, self.resync);
        tokio::spawn(feed.run(cancel.clone()));
    }

    /// Stores a change made on this replica and appends it to the feed; returns how many stored entries
    /// it removed. When Redis cannot take it, the change is kept and written once a master answers.
    pub(super) async fn write(&self, change: &Change) -> Result<usize, StateError> {
        let written = self.store.write_change(change).await;
        if written.is_err() {
            self.store.pending().push(change.clone());
        }
        written
    }

    /// Whether a "seen once" record exists.
    pub(super) async fn exists(
        &self,
        namespace: &str,
        digest: &[u8; 32],
    ) -> Result<bool, StateError> {
        let key = self.store.keys.seen(namespace, digest);
        self.store.query(redis::cmd("EXISTS").arg(key)).await
    }

    /// `SET <prefix><namespace>:<hex> 1 NX PX ttl`: true when this call set it.
    pub(super) async fn first_seen(
        &self,
        namespace: &str,
        digest: &[u8; 32],
        ttl_ms: u64,
    ) -> Result<bool, StateError> {
        let key = self.store.keys.seen(namespace, digest);
        let set: Option<String> = self
            .store
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(set.is_some())
    }
}

// === impl Store ===

impl Store {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Change>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One command on the commands connection, within the timeout.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StateError> {
        self.answer(async {
            let mut conn = self.topology.commands().await?;
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Awaits a call within the timeout; a failure is recorded as the backend's fault, and the next call
    /// finds the master again (Sentinel).
    async fn answer<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        let answer = answer(&self.health, self.timeout, call).await;
        if answer.is_err() {
            self.topology.failed();
        }
        answer
    }

    /// Writes one change on the commands connection: a new entry is stored under its key, a removal
    /// deletes every stored entry of that kind and value; either way the change goes onto the feed.
    async fn write_change(&self, change: &Change) -> Result<usize, StateError> {
        self.answer(async {
            let mut conn = self.topology.commands().await?;
            self.write_on(&mut conn, change).await
        })
        .await
    }

    async fn write_on(&self, conn: &mut Conn, change: &Change) -> redis::RedisResult<usize> {
        let keys = &self.keys;
        let message = serde_json::to_string(change).expect("a change serializes");
        let mut pipe = redis::pipe();
        let removed = match change {
            Change::Put { entry } => {
                let stored = serde_json::to_string(entry).expect("an entry serializes");
                pipe.hset(&keys.hash, entry.key(), stored).ignore();
                0
            }
            Change::Remove { kind, value } => {
                let stored: Vec<(String, String)> = conn.hgetall(&keys.hash).await?;
                let fields: Vec<String> = stored
                    .into_iter()
                    .filter_map(|(field, json)| {
                        let entry = serde_json::from_str::<Entry>(&json).ok()?;
                        (entry.kind == *kind && entry.value == *value).then_some(field)
                    })
                    .collect();
                if !fields.is_empty() {
                    pipe.hdel(&keys.hash, &fields).ignore();
                }
                fields.len()
            }
        };
        pipe.cmd("XADD")
            .arg(&keys.feed)
            .arg("MAXLEN")
            .arg("~")
            .arg(FEED_LENGTH)
            .arg("*")
            .arg("c")
            .arg(&message)
            .ignore();
        if let Some(channel) = &keys.channel {
            pipe.publish(channel, &message).ignore();
        }
        pipe.query_async::<()>(conn).await?;
        Ok(removed)
    }

    /// Writes the changes kept while Redis could not take them, in order; on an error the rest stay
    /// (before anything queued meanwhile).
    async fn flush_pending(&self, conn: &mut Conn) -> Result<(), StateError> {
        let pending = std::mem::take(&mut *self.pending());
        for (i, change) in pending.iter().enumerate() {
            let written = answer(&self.health, self.timeout, self.write_on(conn, change)).await;
            if let Err(e) = written {
                let mut queue = self.pending();
                let mut rest = pending[i..].to_vec();
                rest.append(&mut queue);
                *queue = rest;
                return Err(e);
            }
        }
        if !pending.is_empty() {
            tracing::info!(
                changes = pending.len(),
                "revocations kept while Redis was unavailable are written"
            );
        }
        Ok(())
    }
}

async fn answer<T>(
    health: &Health,
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StateError> {
    let start = std::time::Instant::now();
    let result = tokio::time::timeout(timeout, call).await;
    health
        .calls
        .observe(start.elapsed(), matches!(result, Ok(Ok(_))));
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            health.failed("redis", &e);
            Err(StateError::Unavailable(e.to_string()))
        }
        Err(_) => {
            health.failed("redis", &"no answer within state.timeout_ms");
            Err(StateError::Unavailable("timed out".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_of_one_operation_share_a_hash_tag() {
        let keys = Keys::new("portcullis:", Mode::Cluster);
        assert_eq!(keys.hash, "{portcullis:}revocations");
        assert_eq!(keys.feed, "{portcullis:}feed");
        assert_eq!(keys.epoch, "{portcullis:}epoch");
        assert_eq!(keys.channel, None);
        // "Seen once" records are single-key operations: spread over the slots.
        assert_eq!(&keys.seen("dpop", &[0xab; 32])[..16], "portcullis:dpop:");
        // A prefix with a hash tag of its own keeps it.
        let keys = Keys::new("{app}:", Mode::Cluster);
        assert_eq!(keys.hash, "{app}:revocations");
        // An empty tag `{}` hashes the whole key: not a tag.
        assert!(!has_hash_tag("a{}b"));
        assert!(has_hash_tag("a{x}b"));
        let keys = Keys::new("portcullis:", Mode::Sentinel);
        assert_eq!(keys.hash, "portcullis:revocations");
        assert_eq!(keys.channel.as_deref(), Some("portcullis:revocations"));
    }
}
