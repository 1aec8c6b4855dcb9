//! Metrics exported at `/metrics` (OpenMetrics text), through the `prometheus-client` crate.
//!
//! One [`Metrics`] lives in the server's `App` and outlives every runtime: it is the engine's
//! [`Recorder`], given to every runtime the server builds (through its `Env`), so counts go on across a
//! swap. Label values come only from the config (route and provider names) or from
//! closed sets (`&'static str`): the number of series is bounded.
//!
//! Recording is cheap on the hot path: the decision histograms, the in-flight gauge and the rejection
//! counters are handles resolved at start; a provider's cache and upstream counters are resolved once,
//! when its runtime is bound; a check's counter is one read-locked map lookup keyed by `Arc<str>` clones
//! (no allocation once the series exists).
//!
//! Gauges that describe the current runtime and state (key set sizes, cached tokens, readiness, the shared
//! state) are read when scraped: see [`Snapshot`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::decision::Decision;
use portcullis_core::recorder::{CacheSink, Recorder, UpstreamSink, VerificationSink};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of `portcullis_check_duration_seconds`: 50 µs to 5 s, about three per decade. A cached JWT
/// decides in tens of microseconds; an upstream call in milliseconds; a timeout in seconds.
const CHECK_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Buckets of `portcullis_upstream_duration_seconds`: 1 ms to 10 s (an IdP on the network).
const UPSTREAM_BUCKETS: [f64; 13] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Which listener a check came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Envoy's ext_authz gRPC `Check`.
    Grpc,
    /// HTTP forward authentication.
    Http,
}

// === impl Transport ===

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// Why a check was answered with an error before any decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `server.max_concurrent_checks` checks were already in flight (`RESOURCE_EXHAUSTED`).
    Overloaded,
    /// The caller's deadline (`grpc-timeout`) passed before the decision (`DEADLINE_EXCEEDED`).
    DeadlineExceeded,
}

// === impl Rejection ===

impl Rejection {
    const ALL: [Rejection; 2] = [Rejection::Overloaded, Rejection::DeadlineExceeded];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Overloaded => "overloaded",
            Rejection::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    decision: &'static str,
    reason: &'static str,
    route: Arc<str>,
    provider: Arc<str>,
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    reason: &'static str,
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    kind: &'static str,
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    provider: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Every metric family, registered once.
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    /// By decision kind: allow, permit, deny, error (see [`decision_index`]).
    durations: [Histogram; 4],
    in_flight: Gauge,
    /// By [`Transport`], then [`Rejection`].
    rejections: [[Counter; 2]; 2],
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_evictions: Family<CacheLabels, Counter>,
    upstream_durations: HistogramFamily<UpstreamLabels>,
    upstream_failures: Family<UpstreamLabels, Counter>,
    jwks_fetches: Family<FetchLabels, Counter>,
    /// JWT signature checks by result (valid, invalid), and the ones that waited for a permit.
    verifications: [Counter; 2],
    verification_waits: Counter,
    /// The label value of "no route" and "no provider".
    none: Arc<str>,
}

const DECISIONS: [&str; 4] = ["allow", "permit", "deny", "error"];

fn decision_index(decision: &Decision) -> usize {
    match decision {
        Decision::Allow(_) => 0,
        Decision::Permit { .. } => 1,
        Decision::Deny(_) => 2,
        Decision::Error(_) => 3,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "portcullis_checks",
            "Check decisions by decision (allow; permit = allowed in permissive mode but enforce would deny; deny; error), reason, route, provider and transport (grpc, http)",
            checks.clone(),
        );
        let duration_family: HistogramFamily<DecisionLabel> =
            Family::new_with_constructor(|| Histogram::new(CHECK_BUCKETS));
        registry.register(
            "portcullis_check_duration_seconds",
            "Time from a check's arrival to its decision, by decision",
            duration_family.clone(),
        );
        let durations = DECISIONS
            .map(|decision| duration_family.get_or_create_owned(&DecisionLabel { decision }));
        let in_flight = Gauge::default();
        registry.register(
            "portcullis_checks_in_flight",
            "Checks being decided now",
            in_flight.clone(),
        );
        let rejection_family = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "portcullis_checks_rejected",
            "Checks answered with an error before any decision: overloaded (server.max_concurrent_checks reached, RESOURCE_EXHAUSTED) or deadline_exceeded (the caller's grpc-timeout passed, DEADLINE_EXCEEDED)",
            rejection_family.clone(),
        );
        let rejections = Transport::ALL.map(|transport| {
            Rejection::ALL.map(|reason| {
                rejection_family.get_or_create_owned(&RejectionLabels {
                    reason: reason.as_str(),
                    transport: transport.as_str(),
                })
            })
        });
        let cache_hits = Family::<CacheLabels, Counter>::default();
        registry.register(
            "portcullis_cache_hits",
            "Lookups answered from a cache, by cache (token: verified JWTs; introspection, webhook, github, kubernetes: upstream answers; identity_token: signed identity tokens) and provider (empty for the caches shared by providers)",
            cache_hits.clone(),
        );
        let cache_misses = Family::<CacheLabels, Counter>::default();
        registry.register(
            "portcullis_cache_misses",
            "Lookups a cache could not answer, by cache and provider",
            cache_misses.clone(),
        );
        let cache_evictions = Family::<CacheLabels, Counter>::default();
        registry.register(
            "portcullis_cache_evictions",
            "Entries a cache dropped because they expired or the cache was full, by cache and provider",
            cache_evictions.clone(),
        );
        let upstream_durations: HistogramFamily<UpstreamLabels> =
            Family::new_with_constructor(|| Histogram::new(UPSTREAM_BUCKETS));
        registry.register(
            "portcullis_upstream_duration_seconds",
            "Calls to upstreams, by kind (jwks, introspection, webhook, github, kubernetes, redis) and provider (empty for redis), failed or not",
            upstream_durations.clone(),
        );
        let upstream_failures = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "portcullis_upstream_failures",
            "Upstream calls that failed (network error, timeout, unexpected status or body), by kind and provider",
            upstream_failures.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "portcullis_jwks_fetches",
            "Key set fetches by provider and result (ok, failed)",
            jwks_fetches.clone(),
        );
        let verification_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "portcullis_jwt_verifications",
            "JWT signature checks done (tokens not answered from a cache), by result (valid, invalid)",
            verification_family.clone(),
        );
        let verifications = ["valid", "invalid"]
            .map(|result| verification_family.get_or_create_owned(&ResultLabel { result }));
        let verification_waits = Counter::default();
        registry.register(
            "portcullis_jwt_verification_waits",
            "JWT signature checks that waited for a permit (server.max_concurrent_verifications were running)",
            verification_waits.clone(),
        );
        registry.register(
            "portcullis_build",
            "The running build: its version",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            checks,
            durations,
            in_flight,
            rejections,
            cache_hits,
            cache_misses,
            cache_evictions,
            upstream_durations,
            upstream_failures,
            jwks_fetches,
            verifications,
            verification_waits,
            none: Arc::from(""),
        }
    }
}

impl Metrics {
    /// Counts one decision, on `route`, that took `elapsed`.
    pub fn record(
        &self,
        transport: Transport,
        decision: &Decision,
        route: &Arc<str>,
        elapsed: Duration,
    ) {
        let provider = match decision {
            Decision::Allow(identity) => Some(&identity.provider),
            Decision::Permit {
                identity,
                would_deny,
            } => identity
                .as_ref()
                .map(|i| &i.provider)
                .or(would_deny.provider.as_ref()),
            Decision::Deny(denial) => denial.provider.as_ref(),
            Decision::Error(_) => None,
        };
        let labels = CheckLabels {
            decision: decision.kind(),
            reason: decision.reason(),
            route: Arc::clone(route),
            provider: Arc::clone(provider.unwrap_or(&self.none)),
            transport: transport.as_str(),
        };
        self.checks.get_or_create(&labels).inc();
        self.durations[decision_index(decision)].observe(elapsed.as_secs_f64());
    }

    /// Counts a check answered with an error before any decision.
    pub fn reject(&self, transport: Transport, why: Rejection) {
        let t = Transport::ALL.iter().position(|&x| x == transport);
        let r = Rejection::ALL.iter().position(|&x| x == why);
        if let (Some(t), Some(r)) = (t, r) {
            self.rejections[t][r].inc();
        }
    }

    /// Marks a check in flight until the guard drops (also when its future is dropped).
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Every metric, then the [`Snapshot`]'s, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self, snapshot: &Snapshot) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(16 * 1024);
        let scraped = snapshot.registry();
        // Writing to a String does not fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scraped);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The engine records into these families through [`Recorder`]: each sink is resolved once, when its
/// cache or provider is built, from families that outlive every runtime.
impl Recorder for Metrics {
    fn cache(&self, cache: &'static str, provider: &Arc<str>) -> Arc<dyn CacheSink> {
        let labels = CacheLabels {
            cache,
            provider: Arc::clone(provider),
        };
        Arc::new(CacheCounts([
            self.cache_hits.get_or_create_owned(&labels),
            self.cache_misses.get_or_create_owned(&labels),
            self.cache_evictions.get_or_create_owned(&labels),
        ]))
    }

    fn upstream(&self, kind: &'static str, provider: &Arc<str>) -> Arc<dyn UpstreamSink> {
        let calls = UpstreamCalls::default();
        calls.bind(self, kind, provider);
        Arc::new(calls)
    }

    fn verifications(&self) -> Arc<dyn VerificationSink> {
        Arc::new(VerificationCounts(
            self.verifications.clone(),
            self.verification_waits.clone(),
        ))
    }
}

/// A cache's hit, miss and eviction counters.
struct CacheCounts([Counter; 3]);

impl CacheSink for CacheCounts {
    fn hit(&self) {
        self.0[0].inc();
    }

    fn miss(&self) {
        self.0[1].inc();
    }

    fn evicted(&self) {
        self.0[2].inc();
    }
}

/// `portcullis_jwt_verifications_total` by result, and `portcullis_jwt_verification_waits_total`.
struct VerificationCounts([Counter; 2], Counter);

impl VerificationSink for VerificationCounts {
    fn verified(&self, valid: bool) {
        self.0[usize::from(!valid)].inc();
    }

    fn waited(&self) {
        self.1.inc();
    }
}

impl UpstreamSink for UpstreamCalls {
    fn observe(&self, elapsed: Duration, ok: bool) {
        self.observe_call(elapsed, ok);
    }
}

/// One provider's calls to one kind of upstream: their durations and failures (and, for key sets, the
/// `portcullis_jwks_fetches_total` results). Records nothing until bound.
#[derive(Clone, Default)]
pub struct UpstreamCalls(Arc<OnceLock<UpstreamHandles>>);

struct UpstreamHandles {
    duration: Histogram,
    failures: Counter,
    /// For `jwks`: ok and failed fetches.
    fetches: Option<[Counter; 2]>,
}

// === impl UpstreamCalls ===

impl UpstreamCalls {
    /// Records into `metrics` as `kind` (jwks, introspection, webhook, github, kubernetes, redis) of
    /// `provider`.
    pub fn bind(&self, metrics: &Metrics, kind: &'static str, provider: &Arc<str>) {
        let labels = UpstreamLabels {
            kind,
            provider: Arc::clone(provider),
        };
        let fetches = (kind == "jwks").then(|| {
            ["ok", "failed"].map(|result| {
                metrics.jwks_fetches.get_or_create_owned(&FetchLabels {
                    provider: Arc::clone(provider),
                    result,
                })
            })
        });
        let _ = self.0.set(UpstreamHandles {
            duration: metrics.upstream_durations.get_or_create_owned(&labels),
            failures: metrics.upstream_failures.get_or_create_owned(&labels),
            fetches,
        });
    }

    /// Records one call that took `elapsed` and succeeded or not.
    pub fn observe_call(&self, elapsed: Duration, ok: bool) {
        let Some(handles) = self.0.get() else {
            return;
        };
        handles.duration.observe(elapsed.as_secs_f64());
        if !ok {
            handles.failures.inc();
        }
        if let Some(fetches) = &handles.fetches {
            fetches[usize::from(!ok)].inc();
        }
    }
}

/// What `/metrics` reads at scrape time: the current runtime's key sets and caches, readiness, and the
/// shared state.
#[derive(Default)]
pub struct Snapshot {
    /// Keys in each provider's current key set.
    pub jwks_keys: Vec<(Arc<str>, usize)>,
    /// Verified JWTs cached.
    pub token_cache_entries: u64,
    pub ready: bool,
    /// `memory` or `redis`.
    pub state_backend: &'static str,
    pub state_up: bool,
    pub redis_errors: u64,
    /// With Redis: the mode, master, failovers, catch-ups and feed lag.
    pub redis: Option<RedisSnapshot>,
    /// Entries in this replica's copy of the denylist.
    pub revocations: usize,
    /// Configuration reloads that succeeded and failed, and the hash of the file in force (`serve
    /// --config` only).
    pub reloads: (u64, u64, Option<String>),
    /// The listeners' TLS, when `server.tls` is set.
    pub tls: Option<TlsSnapshot>,
}

/// The Redis series of `/metrics`.
pub struct RedisSnapshot {
    /// `standalone`, `sentinel` or `cluster`.
    pub mode: &'static str,
    /// The master in use (`host:port`; with Cluster, the node serving the denylist's slot), empty until
    /// one answered.
    pub master: String,
    /// Changes of master seen since start.
    pub failovers: u64,
    /// Reconnects after which the whole denylist was read again.
    pub catch_ups: u64,
    /// Seconds since the feed last answered (or since start, until it first does).
    pub feed_lag_seconds: Option<f64>,
}

/// The TLS series of `/metrics`.
pub struct TlsSnapshot {
    /// notAfter of the certificate the listeners serve (Unix seconds).
    pub not_after: i64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub handshake_failures: u64,
}

// === impl Snapshot ===

impl Snapshot {
    fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        let jwks_keys = Family::<[(&'static str, Arc<str>); 1], Gauge>::default();
        for (provider, keys) in &self.jwks_keys {
            jwks_keys
                .get_or_create(&[("provider", Arc::clone(provider))])
                .set(i64::try_from(*keys).unwrap_or(i64::MAX));
        }
        registry.register(
            "portcullis_jwks_keys",
            "Keys in the current key set of each provider",
            jwks_keys,
        );
        let gauge = |value: i64| {
            let g = Gauge::<i64>::default();
            g.set(value);
            g
        };
        registry.register(
            "portcullis_token_cache_entries",
            "Verified JWTs cached",
            gauge(i64::try_from(self.token_cache_entries).unwrap_or(i64::MAX)),
        );
        registry.register(
            "portcullis_ready",
            "1 when every provider can decide",
            gauge(i64::from(self.ready)),
        );
        let state_up = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        state_up
            .get_or_create(&[("backend", self.state_backend)])
            .set(i64::from(self.state_up));
        registry.register(
            "portcullis_state_up",
            "1 while the shared state backend (memory, redis) is reachable",
            state_up,
        );
        let errors = Counter::<u64>::default();
        errors.inc_by(self.redis_errors);
        registry.register(
            "portcullis_redis_errors",
            "Failed calls to Redis (the shared state backend)",
            errors,
        );
        if let Some(redis) = &self.redis {
            let info = Family::<[(&'static str, String); 2], Gauge>::default();
            info.get_or_create(&[
                ("mode", redis.mode.to_owned()),
                ("master", redis.master.clone()),
            ])
            .set(1);
            registry.register(
                "portcullis_state_redis_info",
                "The Redis mode in use (standalone, sentinel, cluster) and its master (host:port; with cluster, the node serving the denylist's slot)",
                info,
            );
            let failovers = Counter::<u64>::default();
            failovers.inc_by(redis.failovers);
            registry.register(
                "portcullis_state_failovers",
                "Changes of the Redis master seen (a Sentinel failover, the denylist's cluster slot served by another node)",
                failovers,
            );
            let catch_ups = Counter::<u64>::default();
            catch_ups.inc_by(redis.catch_ups);
            registry.register(
                "portcullis_state_catch_ups",
                "Reconnects to Redis after which this replica read the whole denylist again (catching up with what it missed)",
                catch_ups,
            );
            if let Some(lag) = redis.feed_lag_seconds {
                let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
                gauge.set(lag);
                registry.register(
                    "portcullis_state_feed_lag_seconds",
                    "Seconds since the revocation feed last answered (or since start): how far this replica's denylist copy may be behind (at most about 1 while connected)",
                    gauge,
                );
            }
        }
        registry.register(
            "portcullis_revocations",
            "Entries in this replica's copy of the denylist",
            gauge(i64::try_from(self.revocations).unwrap_or(i64::MAX)),
        );
        let counter = |value: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(value);
            c
        };
        let results = |ok: u64, failed: u64| {
            let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
            family.get_or_create(&[("result", "ok")]).inc_by(ok);
            family.get_or_create(&[("result", "failed")]).inc_by(failed);
            family
        };
        let (ok, failed, hash) = &self.reloads;
        registry.register(
            "portcullis_config_reloads",
            "Configuration reloads by result (failed: the running configuration stayed)",
            results(*ok, *failed),
        );
        if let Some(hash) = hash {
            let info = Family::<[(&'static str, String); 1], Gauge>::default();
            info.get_or_create(&[("hash", hash.clone())]).set(1);
            registry.register(
                "portcullis_config_info",
                "The configuration in force: the first 16 hex digits of the SHA-256 of its file (of its fragments' names and contents for a directory)",
                info,
            );
        }
        if let Some(tls) = &self.tls {
            registry.register(
                "portcullis_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate the listeners serve (Unix seconds)",
                gauge(tls.not_after),
            );
            registry.register(
                "portcullis_tls_reloads",
                "Changed server.tls files: loaded (ok), or refused keeping the previous ones (failed)",
                results(tls.reloads_ok, tls.reloads_failed),
            );
            registry.register(
                "portcullis_tls_handshake_failures",
                "TLS handshakes refused or timed out (no or untrusted client certificate, plaintext clients, scanners)",
                counter(tls.handshake_failures),
            );
        }
        process::Process::read(std::path::Path::new("/proc")).register(&mut registry);
        registry
    }
}
