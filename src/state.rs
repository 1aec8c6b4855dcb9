//! State shared across replicas: the denylist (fed to every replica's local copy) and the "seen once"
//! records behind DPoP replay protection and Auth0 redelivery. [`SharedState`] is built once from the
//! configuration and outlives runtimes; its backend is this process (`memory`, one replica) or Redis
//! ([`redis`], several replicas).
//!
//! Checks never wait on Redis for the denylist: they read the local copy, which the Redis feed keeps
//! current (a stream each replica reads, from the whole table on every reconnect) and a periodic full
//! resync repairs. When Redis is unreachable the last known denylist stays in
//! force, the fault is logged, counted and shown on `/readyz`, and calls that need an answer from Redis
//! ([`SharedState::first_use`]) fail, so their callers fail closed. Recovery is automatic.

mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Backend, Config, ConfigErrors, Problems, Secret, SecretRef, Sources};
use crate::revocation::{Change, Denylist, Entry, Kind};
use portcullis_core::recorder::{NoRecorder, Recorder, UpstreamSink};

/// Why shared state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis could not be reached or did not answer in time.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// The in-process record of seen values is full of live entries.
    #[error("the replay cache is full")]
    Full,
}

/// The revocation settings the admin port needs.
pub struct RevocationSettings {
    /// Read again on every reload, so a rotated `{file:}` secret replaces the old one at once.
    secrets: arc_swap::ArcSwap<RevocationSecrets>,
    pub default_ttl_seconds: u64,
    pub auth0_issuer: Option<String>,
    pub auth0_max_body_bytes: usize,
}

/// The secrets of the admin API and the Auth0 log stream receiver (`None`: that endpoint is off).
pub struct RevocationSecrets {
    pub admin: Option<Secret>,
    pub auth0: Option<Secret>,
}

// === impl RevocationSecrets ===

impl RevocationSecrets {
    /// Resolves the secrets `revocation` names; a reference that does not resolve is a problem at its path.
    fn resolve(config: &Config, secrets: &Sources, problems: &mut Problems) -> RevocationSecrets {
        let revocation = &config.revocation;
        RevocationSecrets {
            admin: resolve(
                secrets,
                problems,
                "revocation.admin_secret",
                &revocation.admin_secret,
            ),
            auth0: resolve(
                secrets,
                problems,
                "revocation.auth0_log_stream_secret",
                &revocation.auth0_log_stream_secret,
            ),
        }
    }
}

/// A secret reference resolved, or a problem at `path`.
fn resolve(
    secrets: &Sources,
    problems: &mut Problems,
    path: &str,
    secret: &Option<SecretRef>,
) -> Option<Secret> {
    secret.as_ref().and_then(|s| {
        s.resolve(secrets)
            .map_err(|e| problems.add(path, e.to_string()))
            .ok()
    })
}

// === impl RevocationSettings ===

impl RevocationSettings {
    /// The secrets in force.
    pub fn secrets(&self) -> Arc<RevocationSecrets> {
        self.secrets.load_full()
    }
}

/// The largest number of live "seen once" records kept in memory.
const MEMORY_SEEN_LIMIT: usize = 1 << 20;

enum StateBackend {
    Memory(Mutex<HashMap<(&'static str, [u8; 32]), i64>>),
    Redis(Box<redis::RedisState>),
}

/// The shared state of one process.
pub struct SharedState {
    denylist: Arc<Denylist>,
    settings: RevocationSettings,
    backend: StateBackend,
    health: Arc<Health>,
    clock: Clock,
}

// === impl SharedState ===

impl SharedState {
    /// Builds the state from the configuration: resolves its secrets; no connection is made yet (see
    /// [`SharedState::spawn_background`]). With Redis, its calls are recorded into `recorder` as upstream
    /// calls of kind `redis` (`portcullis_upstream_duration_seconds{kind="redis"}`,
    /// `portcullis_upstream_failures_total`); in memory there are none.
    pub fn from_config(
        config: &Config,
        secrets: &Sources,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> Result<SharedState, ConfigErrors> {
        let mut problems = Problems::default();
        let revocation = &config.revocation;
        let settings = RevocationSettings {
            secrets: arc_swap::ArcSwap::from_pointee(RevocationSecrets::resolve(
                config,
                secrets,
                &mut problems,
            )),
            default_ttl_seconds: revocation.default_ttl_seconds,
            auth0_issuer: revocation.auth0_issuer.clone(),
            auth0_max_body_bytes: revocation.auth0_max_body_bytes,
        };
        let password = resolve(
            secrets,
            &mut problems,
            "state.password",
            &config.state.password,
        );
        let health = Arc::new(match config.state.backend {
            Backend::Memory => Health::default(),
            Backend::Redis => Health::new(recorder.upstream("redis", &Arc::from(""))),
        });
        let backend = match config.state.backend {
            Backend::Memory => StateBackend::Memory(Mutex::default()),
            Backend::Redis => {
                match redis::RedisState::new(&config.state, password.as_ref(), Arc::clone(&health))
                {
                    Ok(redis) => StateBackend::Redis(Box::new(redis)),
                    Err(e) => {
                        let path = if config.state.sentinel.is_some() {
                            "state.sentinel.urls"
                        } else if config.state.cluster.is_some() {
                            "state.cluster.urls"
                        } else {
                            "state.url"
                        };
                        problems.add(path, e.to_string());
                        StateBackend::Memory(Mutex::default())
                    }
                }
            }
        };
        problems.into_result(SharedState {
            denylist: Arc::default(),
            settings,
            backend,
            health,
            clock,
        })
    }

    /// One replica's state in memory, with the admin API and the Auth0 receiver off.
    pub fn memory(clock: Clock) -> SharedState {
        SharedState {
            denylist: Arc::default(),
            settings: RevocationSettings {
                secrets: arc_swap::ArcSwap::from_pointee(RevocationSecrets {
                    admin: None,
                    auth0: None,
                }),
                default_ttl_seconds: 86_400,
                auth0_issuer: None,
                auth0_max_body_bytes: 1 << 20,
            },
            backend: StateBackend::Memory(Mutex::default()),
            health: Arc::default(),
            clock,
        }
    }

    /// Starts the Redis feed (stream and resync) until `cancel`; nothing to do in memory.
    pub fn spawn_background(&self, cancel: &CancellationToken) {
        if let StateBackend::Redis(redis) = &self.backend {
            redis.spawn(Arc::clone(&self.denylist), self.clock.clone(), cancel);
        }
    }

    /// The local copy every check reads.
    pub fn denylist(&self) -> &Arc<Denylist> {
        &self.denylist
    }

    pub fn settings(&self) -> &RevocationSettings {
        &self.settings
    }

    /// Reads the admin API's and the Auth0 receiver's secrets again (a reload: the `revocation` section
    /// itself cannot change, but a `{file:}` secret it names can be rotated), and puts them in force only
    /// when both resolve; otherwise the problems, and the old secrets stay.
    pub fn reload_secrets(&self, config: &Config, secrets: &Sources) -> Result<(), ConfigErrors> {
        let mut problems = Problems::default();
        let fresh = RevocationSecrets::resolve(config, secrets, &mut problems);
        problems.into_result(())?;
        self.settings.secrets.store(Arc::new(fresh));
        Ok(())
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// `memory` or `redis`.
    /// Whether replicas share this state (Redis), not this process alone.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, StateBackend::Redis(_))
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            StateBackend::Memory(_) => "memory",
            StateBackend::Redis(_) => "redis",
        }
    }

    /// The current fault of the shared backend, if any (for `/readyz` and `/metrics`).
    pub fn fault(&self) -> Option<String> {
        self.health.fault()
    }

    /// With Redis: the mode and master in use, failovers seen, catch-ups and feed lag (for `/metrics`).
    pub fn redis_metrics(&self) -> Option<crate::metrics::RedisSnapshot> {
        match &self.backend {
            StateBackend::Memory(_) => None,
            StateBackend::Redis(redis) => Some(self.health.redis_snapshot(redis.mode().name())),
        }
    }

    /// Faults seen since start.
    pub fn errors(&self) -> u64 {
        self.health.errors.load(Ordering::Relaxed)
    }

    /// Adds or replaces an entry. It applies on this replica at once; with Redis, an error says it could
    /// not be shared yet: it still applies here and is written when Redis is back.
    pub async fn revoke(&self, entry: Entry) -> Result<(), StateError> {
        self.revoke_all(vec![entry]).await
    }

    /// Adds entries as one change to the local copy (one table copy for the batch), then writes each to
    /// the shared store. On a store error the local copy keeps them (as for [`SharedState::revoke`]).
    pub async fn revoke_all(&self, entries: Vec<Entry>) -> Result<(), StateError> {
        let changes: Vec<Change> = entries
            .into_iter()
            .map(|entry| Change::Put { entry })
            .collect();
        self.denylist.apply_all(&changes, self.now());
        match &self.backend {
            StateBackend::Memory(_) => Ok(()),
            StateBackend::Redis(redis) => {
                for change in &changes {
                    redis.write(change).await?;
                }
                Ok(())
            }
        }
    }

    /// Removes every entry of this kind and value; returns how many this replica held.
    pub async fn unrevoke(&self, kind: Kind, value: &str) -> Result<usize, StateError> {
        let held = self.denylist.find(kind, value).len();
        let change = Change::Remove {
            kind,
            value: value.to_owned(),
        };
        self.denylist.apply(&change, self.now());
        match &self.backend {
            StateBackend::Memory(_) => Ok(held),
            StateBackend::Redis(redis) => redis.write(&change).await.map(|n| n.max(held)),
        }
    }

    /// True the first time `digest` is offered before `expires_at` (Unix seconds), false for every later
    /// offer on any replica sharing this state: a DPoP proof's `jti` replay check. An error means the
    /// answer is unknown; the caller fails closed.
    pub async fn first_use(&self, digest: [u8; 32], expires_at: i64) -> Result<bool, StateError> {
        self.first_seen("dpop", digest, expires_at).await
    }

    /// Whether this Auth0 `log_id` was already applied (a redelivered event).
    pub async fn first_log_id_seen(&self, log_id: &str) -> Result<bool, StateError> {
        let digest = log_id_digest(log_id);
        match &self.backend {
            StateBackend::Memory(seen) => {
                let seen = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(seen
                    .get(&("auth0", digest))
                    .is_some_and(|&until| until > self.now()))
            }
            StateBackend::Redis(redis) => redis.exists("auth0", &digest).await,
        }
    }

    /// Records an applied Auth0 `log_id` for the entry lifetime, so a redelivery is skipped.
    pub async fn mark_log_id(&self, log_id: &str) -> Result<(), StateError> {
        let expires_at = self.now() + self.settings.default_ttl_seconds as i64;
        self.first_seen("auth0", log_id_digest(log_id), expires_at)
            .await
            .map(drop)
    }

    async fn first_seen(
        &self,
        namespace: &'static str,
        digest: [u8; 32],
        expires_at: i64,
    ) -> Result<bool, StateError> {
        let now = self.now();
        match &self.backend {
            StateBackend::Memory(seen) => {
                let mut seen = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(&until) = seen.get(&(namespace, digest)) {
                    if until > now {
                        return Ok(false);
                    }
                }
                if seen.len() >= MEMORY_SEEN_LIMIT {
                    seen.retain(|_, until| *until > now);
                    if seen.len() >= MEMORY_SEEN_LIMIT {
                        return Err(StateError::Full);
                    }
                }
                seen.insert((namespace, digest), expires_at);
                Ok(true)
            }
            StateBackend::Redis(redis) => {
                let ttl_ms = (expires_at - now).max(1).saturating_mul(1000);
                redis.first_seen(namespace, &digest, ttl_ms as u64).await
            }
        }
    }
}

fn log_id_digest(log_id: &str) -> [u8; 32] {
    Sha256::digest(log_id.as_bytes()).into()
}

/// The health of the shared backend: the current fault and a count of faults, and with Redis the master
/// in use and the feed's progress.
pub(crate) struct Health {
    fault: Mutex<Option<String>>,
    errors: AtomicU64,
    /// Redis call durations and failures (upstream kind `redis`).
    pub(crate) calls: Arc<dyn UpstreamSink>,
    /// The Redis master in use (`host:port`), once known.
    master: Mutex<Option<String>>,
    /// Changes of master seen (a Sentinel failover, a cluster slot moved to another node).
    failovers: AtomicU64,
    /// Feed sessions that began by reading the whole denylist after a lost one (a reconnect).
    catch_ups: AtomicU64,
    /// When the feed last answered (this replica's copy was current then), or when it started.
    heard: Mutex<Option<std::time::Instant>>,
}

// === impl Health ===

impl Default for Health {
    /// Recording no calls (in memory there are none).
    fn default() -> Health {
        Health::new(Arc::new(NoRecorder))
    }
}

impl Health {
    /// Healthy so far, with Redis calls recorded into `calls`.
    fn new(calls: Arc<dyn UpstreamSink>) -> Health {
        Health {
            fault: Mutex::default(),
            errors: AtomicU64::default(),
            calls,
            master: Mutex::default(),
            failovers: AtomicU64::default(),
            catch_ups: AtomicU64::default(),
            heard: Mutex::default(),
        }
    }

    /// Records a fault (once per change of message in the log).
    pub(crate) fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let message = format!("{what}: {error}");
        let mut fault = self
            .fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fault.as_deref() != Some(&message) {
            tracing::warn!(state.fault = %message, "shared state unavailable: the last known denylist stays in force");
        }
        *fault = Some(message);
    }

    pub(crate) fn recovered(&self) {
        let mut fault = self
            .fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fault.take().is_some() {
            tracing::info!("shared state reachable again");
        }
    }

    /// Notes the master in use; a different one than before is a failover seen.
    pub(crate) fn set_master(&self, address: Option<String>) {
        let mut master = self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(old), Some(new)) = (master.as_deref(), address.as_deref()) {
            if old != new {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(state.master = %new, state.previous_master = %old, "the Redis master changed (failover)");
            }
        }
        if address.is_some() {
            *master = address;
        }
    }

    pub(crate) fn caught_up(&self) {
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn heard(&self) {
        *self
            .heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    fn redis_snapshot(&self, mode: &'static str) -> crate::metrics::RedisSnapshot {
        let lock = |m: &Mutex<Option<String>>| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        crate::metrics::RedisSnapshot {
            mode,
            master: lock(&self.master).unwrap_or_default(),
            failovers: self.failovers.load(Ordering::Relaxed),
            catch_ups: self.catch_ups.load(Ordering::Relaxed),
            feed_lag_seconds: self
                .heard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .map(|at| at.elapsed().as_secs_f64()),
        }
    }

    fn fault(&self) -> Option<String> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

// === impl SharedState as the DPoP replay store ===

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl crate::dpop::SharedSeen for SharedState {
    fn first_use(
        &self,
        digest: [u8; 32],
        expires_at: i64,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<bool, crate::dpop::ReplayUnavailable>> + Send + '_>,
    > {
        Box::pin(async move {
            SharedState::first_use(self, digest, expires_at)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "DPoP replay check failed: the proof is refused");
                    crate::dpop::ReplayUnavailable
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_first_use_catches_the_second_use_until_expiry() {
        let clock = Clock::manual(1000);
        let state = SharedState::memory(clock.clone());
        assert!(state.first_use([1; 32], 1010).await.unwrap());
        assert!(!state.first_use([1; 32], 1010).await.unwrap());
        assert!(state.first_use([2; 32], 1010).await.unwrap());
        // Namespaces are apart: a log id never collides with a proof.
        assert!(!state.first_log_id_seen("90020").await.unwrap());
        state.mark_log_id("90020").await.unwrap();
        assert!(state.first_log_id_seen("90020").await.unwrap());
        clock.set(1011);
        assert!(state.first_use([1; 32], 1020).await.unwrap());
    }

    #[tokio::test]
    async fn memory_revocations_apply_locally() {
        let state = SharedState::memory(Clock::manual(100));
        let entry = crate::revocation::new_entry(Kind::Sub, "alice".into(), None, 60, 100).unwrap();
        state.revoke(entry.clone()).await.unwrap();
        assert_eq!(state.denylist().list(100), vec![entry]);
        assert_eq!(state.unrevoke(Kind::Sub, "alice").await.unwrap(), 1);
        assert!(state.denylist().is_empty());
        assert_eq!(state.fault(), None);
    }
}
