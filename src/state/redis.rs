//! The Redis backend: the denylist is a hash (`<prefix>revocations`, one field per entry) with changes
//! published on `<prefix>revocations` and applied by every replica's subscriber; a full read of the hash
//! every `resync_seconds` repairs whatever a lost message or a reconnection missed. "Seen once" records are
//! `SET <prefix><namespace>:<hex> 1 NX PX <ttl>` keys.
//!
//! A Redis that lost its data (restarted without persistence) is recognised by its missing epoch key
//! (`<prefix>epoch`, created with `SET NX`): the first replica to notice writes its local denylist back,
//! so a restart does not silently lift revocations.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, IntoConnectionInfo as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Health, StateError};
use crate::clock::Clock;
use crate::config::{Secret, StateConfig};
use crate::revocation::{Change, Denylist, Entry};

/// The most pub/sub messages applied as one change to the local denylist.
const MAX_BATCH: usize = 10_000;

pub(super) struct RedisState {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    hash: String,
    channel: String,
    epoch: String,
    resync: Duration,
    timeout: Duration,
    health: Arc<Health>,
    /// Wakes the resync task at once (after a (re)subscription).
    resync_now: Arc<Notify>,
    /// Changes made here while Redis was unreachable, written at the next successful resync.
    pending: Arc<Mutex<Vec<Change>>>,
}

// === impl RedisState ===

impl RedisState {
    pub(super) fn new(
        config: &StateConfig,
        password: Option<&Secret>,
        health: Arc<Health>,
    ) -> Result<RedisState, redis::RedisError> {
        let url = config.url.as_deref().unwrap_or_default();
        let mut info = url.into_connection_info()?;
        if let Some(password) = password {
            let password = String::from_utf8_lossy(password.expose()).into_owned();
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager = client.get_connection_manager_lazy(
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1)),
        )?;
        let prefix = config.key_prefix.clone();
        Ok(RedisState {
            client,
            manager,
            hash: format!("{prefix}revocations"),
            channel: format!("{prefix}revocations"),
            epoch: format!("{prefix}epoch"),
            prefix,
            resync: Duration::from_secs(config.resync_seconds),
            timeout,
            health,
            resync_now: Arc::new(Notify::new()),
            pending: Arc::default(),
        })
    }

    /// Starts the subscriber and the resync task.
    pub(super) fn spawn(&self, denylist: Arc<Denylist>, clock: Clock, cancel: &CancellationToken) {
        let feed = Feed {
            client: self.client.clone(),
            manager: self.manager.clone(),
            hash: self.hash.clone(),
            channel: self.channel.clone(),
            epoch: self.epoch.clone(),
            timeout: self.timeout,
            health: Arc::clone(&self.health),
            denylist,
            clock,
            pending: Arc::clone(&self.pending),
        };
        let feed = Arc::new(feed);
        let (subscriber, resync) = (Arc::clone(&feed), feed);
        let (now, period) = (Arc::clone(&self.resync_now), self.resync);
        let cancel_sub = cancel.clone();
        let notify = Arc::clone(&now);
        tokio::spawn(async move { subscriber.subscribe(notify, cancel_sub).await });
        let cancel = cancel.clone();
        tokio::spawn(async move { resync.resync_loop(now, period, cancel).await });
    }

    /// Stores and publishes a change made on this replica; returns how many stored entries it removed.
    /// When Redis cannot be reached the change is kept and written at the next successful resync.
    pub(super) async fn write(&self, change: &Change) -> Result<usize, StateError> {
        let mut conn = self.manager.clone();
        let written = write_change(
            &self.health,
            self.timeout,
            &mut conn,
            &self.hash,
            &self.channel,
            change,
        )
        .await;
        if written.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(change.clone());
        }
        written
    }

    fn seen_key(&self, namespace: &str, digest: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + namespace.len() + 65);
        key.push_str(&self.prefix);
        key.push_str(namespace);
        key.push(':');
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    /// Whether a "seen once" record exists.
    pub(super) async fn exists(
        &self,
        namespace: &str,
        digest: &[u8; 32],
    ) -> Result<bool, StateError> {
        let mut conn = self.manager.clone();
        self.answer(conn.exists(self.seen_key(namespace, digest)))
            .await
    }

    /// `SET <prefix><namespace>:<hex> 1 NX PX ttl`: true when this call set it.
    pub(super) async fn first_seen(
        &self,
        namespace: &str,
        digest: &[u8; 32],
        ttl_ms: u64,
    ) -> Result<bool, StateError> {
        let key = self.seen_key(namespace, digest);
        let mut conn = self.manager.clone();
        let set: Option<String> = self
            .answer(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Awaits a command within the timeout; a failure is recorded as the backend's fault.
    async fn answer<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        answer(&self.health, self.timeout, call).await
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
        .observe_call(start.elapsed(), matches!(result, Ok(Ok(_))));
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

/// Writes one change: a new entry is stored under its key, a removal deletes every stored entry of that
/// kind and value; either way the change is published for the other replicas.
async fn write_change(
    health: &Health,
    timeout: Duration,
    conn: &mut ConnectionManager,
    hash: &str,
    channel: &str,
    change: &Change,
) -> Result<usize, StateError> {
    let message = serde_json::to_string(change).expect("a change serializes");
    let mut pipe = redis::pipe();
    let removed = match change {
        Change::Put { entry } => {
            let stored = serde_json::to_string(entry).expect("an entry serializes");
            pipe.hset(hash, entry.key(), stored).ignore();
            0
        }
        Change::Remove { kind, value } => {
            let stored: Vec<(String, String)> = answer(health, timeout, conn.hgetall(hash)).await?;
            let fields: Vec<String> = stored
                .into_iter()
                .filter_map(|(field, json)| {
                    let entry = serde_json::from_str::<Entry>(&json).ok()?;
                    (entry.kind == *kind && entry.value == *value).then_some(field)
                })
                .collect();
            if !fields.is_empty() {
                pipe.hdel(hash, &fields).ignore();
            }
            fields.len()
        }
    };
    pipe.publish(channel, message).ignore();
    answer(health, timeout, pipe.query_async::<()>(conn)).await?;
    Ok(removed)
}

/// What the background tasks share.
struct Feed {
    client: redis::Client,
    manager: ConnectionManager,
    hash: String,
    channel: String,
    epoch: String,
    timeout: Duration,
    health: Arc<Health>,
    denylist: Arc<Denylist>,
    clock: Clock,
    pending: Arc<Mutex<Vec<Change>>>,
}

// === impl Feed ===

impl Feed {
    /// Subscribes and applies every published change; on a lost connection, retries with backoff and asks
    /// for a resync once subscribed again.
    async fn subscribe(&self, resync_now: Arc<Notify>, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::time::timeout(self.timeout, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match connected {
                Ok(Ok(pubsub)) => {
                    backoff = Duration::from_millis(100);
                    resync_now.notify_one();
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            message = messages.next() => match message {
                                Some(message) => {
                                    // What else is already waiting is applied with it: a burst of
                                    // changes (an Auth0 batch on another replica) is one table copy.
                                    let mut batch = vec![message];
                                    while batch.len() < MAX_BATCH {
                                        match messages.next().now_or_never() {
                                            Some(Some(message)) => batch.push(message),
                                            _ => break,
                                        }
                                    }
                                    self.apply(&batch);
                                }
                                None => break,
                            },
                        }
                    }
                    self.health
                        .failed("redis", &"the pub/sub connection was lost");
                }
                Ok(Err(e)) => self.health.failed("redis pub/sub", &e),
                Err(_) => self
                    .health
                    .failed("redis pub/sub", &"no answer within state.timeout_ms"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn apply(&self, messages: &[redis::Msg]) {
        let changes: Vec<Change> = messages
            .iter()
            .filter_map(|message| {
                serde_json::from_slice::<Change>(message.get_payload_bytes())
                    .map_err(
                        |e| tracing::warn!(error = %e, "ignoring a malformed revocation message"),
                    )
                    .ok()
            })
            .collect();
        self.denylist.apply_all(&changes, self.clock.now());
    }

    /// Reads the whole denylist every `period`, and at once when asked.
    async fn resync_loop(&self, now: Arc<Notify>, period: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = now.notified() => {}
                _ = tokio::time::sleep(period) => {}
            }
            if self.resync().await.is_ok() {
                self.health.recovered();
            }
        }
    }

    async fn resync(&self) -> Result<(), StateError> {
        let mut conn = self.manager.clone();
        let now = self.clock.now();
        let fresh: Option<String> = answer(
            &self.health,
            self.timeout,
            redis::cmd("SET")
                .arg(&self.epoch)
                .arg(now)
                .arg("NX")
                .query_async(&mut conn),
        )
        .await?;
        if fresh.is_some() {
            // A new (or emptied) Redis: what this replica knows goes back in.
            let local = self.denylist.list(now);
            if !local.is_empty() {
                tracing::warn!(
                    entries = local.len(),
                    "Redis holds no denylist (new or restarted without persistence): writing back this replica's"
                );
                let mut pipe = redis::pipe();
                for entry in &local {
                    pipe.hset(
                        &self.hash,
                        entry.key(),
                        serde_json::to_string(entry).expect("an entry serializes"),
                    )
                    .ignore();
                }
                answer(
                    &self.health,
                    self.timeout,
                    pipe.query_async::<()>(&mut conn),
                )
                .await?;
            }
        }
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (i, change) in pending.iter().enumerate() {
            let written = write_change(
                &self.health,
                self.timeout,
                &mut conn,
                &self.hash,
                &self.channel,
                change,
            )
            .await;
            if let Err(e) = written {
                let mut queue = self
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut rest = pending[i..].to_vec();
                rest.append(&mut queue);
                *queue = rest;
                return Err(e);
            }
        }
        let stored: Vec<(String, String)> =
            answer(&self.health, self.timeout, conn.hgetall(&self.hash)).await?;
        let mut expired = Vec::new();
        let mut entries = Vec::with_capacity(stored.len());
        for (field, json) in stored {
            match serde_json::from_str::<Entry>(&json) {
                Ok(entry) if entry.expires_at > now => entries.push(entry),
                Ok(_) => expired.push(field),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed stored revocation"),
            }
        }
        self.denylist.replace(entries, now);
        if !expired.is_empty() {
            let _: Result<(), _> = answer(
                &self.health,
                self.timeout,
                conn.hdel::<_, _, ()>(&self.hash, expired),
            )
            .await;
        }
        Ok(())
    }
}
