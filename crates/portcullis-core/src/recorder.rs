//! What the engine counts, as a seam: the host implements [`Recorder`] (Prometheus in the server, Envoy's
//! stats in the module) and the engine records through handles resolved once, when a provider or cache is
//! built, so the hot path is one virtual call per event and no label lookup.
//!
//! Label values come only from the configuration (provider names) or from closed sets (`&'static str`), so
//! a host's number of series is bounded.

use std::sync::Arc;
use std::time::Duration;

/// The host's metrics: it hands out one sink per (cache or upstream, provider).
pub trait Recorder: Send + Sync {
    /// The hit, miss and eviction counts of `cache` (`token`, `introspection`, `webhook`, `github`,
    /// `kubernetes`, `identity_token`) of `provider` (empty for a cache providers share).
    fn cache(&self, cache: &'static str, provider: &Arc<str>) -> Arc<dyn CacheSink>;
    /// Calls of `kind` (`jwks`, `introspection`, `webhook`, `github`, `kubernetes`) made for `provider`.
    fn upstream(&self, kind: &'static str, provider: &Arc<str>) -> Arc<dyn UpstreamSink>;
    /// JWT signature checks and waits for a verification permit.
    fn verifications(&self) -> Arc<dyn VerificationSink>;
}

pub trait CacheSink: Send + Sync {
    fn hit(&self);
    fn miss(&self);
    /// An entry dropped because it expired or the cache was full (not replaced or invalidated).
    fn evicted(&self);
}

pub trait UpstreamSink: Send + Sync {
    /// One call that took `elapsed` and succeeded or not.
    fn observe(&self, elapsed: Duration, ok: bool);
}

pub trait VerificationSink: Send + Sync {
    fn verified(&self, valid: bool);
    fn waited(&self);
}

/// Records nothing: `explain`, `validate-config` and tests that do not look at metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn cache(&self, _: &'static str, _: &Arc<str>) -> Arc<dyn CacheSink> {
        Arc::new(NoRecorder)
    }

    fn upstream(&self, _: &'static str, _: &Arc<str>) -> Arc<dyn UpstreamSink> {
        Arc::new(NoRecorder)
    }

    fn verifications(&self) -> Arc<dyn VerificationSink> {
        Arc::new(NoRecorder)
    }
}

impl CacheSink for NoRecorder {
    fn hit(&self) {}
    fn miss(&self) {}
    fn evicted(&self) {}
}

impl UpstreamSink for NoRecorder {
    fn observe(&self, _: Duration, _: bool) {}
}

impl VerificationSink for NoRecorder {
    fn verified(&self, _: bool) {}
    fn waited(&self) {}
}

/// One cache's counts; clones share the sink (an eviction listener holds one).
#[derive(Clone)]
pub struct CacheCounters(Arc<dyn CacheSink>);

// === impl CacheCounters ===

impl CacheCounters {
    pub fn new(recorder: &dyn Recorder, cache: &'static str, provider: &Arc<str>) -> CacheCounters {
        CacheCounters(recorder.cache(cache, provider))
    }

    pub fn hit(&self) {
        self.0.hit();
    }

    pub fn miss(&self) {
        self.0.miss();
    }

    /// Counts an entry the cache dropped on its own (it expired or was pushed out); `evicted` is false for
    /// a replaced or invalidated one.
    pub fn removed(&self, evicted: bool) {
        if evicted {
            self.0.evicted();
        }
    }
}

impl Default for CacheCounters {
    fn default() -> CacheCounters {
        CacheCounters(Arc::new(NoRecorder))
    }
}

/// One provider's calls to one kind of upstream.
#[derive(Clone)]
pub struct UpstreamCalls(Arc<dyn UpstreamSink>);

// === impl UpstreamCalls ===

impl UpstreamCalls {
    pub fn new(recorder: &dyn Recorder, kind: &'static str, provider: &Arc<str>) -> UpstreamCalls {
        UpstreamCalls(recorder.upstream(kind, provider))
    }

    pub fn observe(&self, elapsed: Duration, ok: bool) {
        self.0.observe(elapsed, ok);
    }
}

impl Default for UpstreamCalls {
    fn default() -> UpstreamCalls {
        UpstreamCalls(Arc::new(NoRecorder))
    }
}

/// A runtime's JWT signature-check counts.
#[derive(Clone)]
pub struct VerificationCounters(Arc<dyn VerificationSink>);

// === impl VerificationCounters ===

impl VerificationCounters {
    pub fn new(recorder: &dyn Recorder) -> VerificationCounters {
        VerificationCounters(recorder.verifications())
    }

    pub fn verified(&self, valid: bool) {
        self.0.verified(valid);
    }

    pub fn waited(&self) {
        self.0.waited();
    }
}

impl Default for VerificationCounters {
    fn default() -> VerificationCounters {
        VerificationCounters(Arc::new(NoRecorder))
    }
}

/// Counts in memory, by name: for tests and for hosts that read counts themselves. Names are
/// `cache.<cache>.<provider>.{hit,miss,evicted}`, `upstream.<kind>.<provider>.{ok,failed}`,
/// `verifications.{valid,invalid,waited}`.
#[derive(Debug, Clone, Default)]
pub struct MemoryRecorder(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

// === impl MemoryRecorder ===

impl MemoryRecorder {
    /// The count under `name` (0 when never counted).
    pub fn count(&self, name: &str) -> u64 {
        self.0
            .lock()
            .map_or(0, |counts| counts.get(name).copied().unwrap_or(0))
    }

    fn add(&self, name: String) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(name).or_default() += 1;
        }
    }
}

struct Named(MemoryRecorder, String);

impl Recorder for MemoryRecorder {
    fn cache(&self, cache: &'static str, provider: &Arc<str>) -> Arc<dyn CacheSink> {
        Arc::new(Named(self.clone(), format!("cache.{cache}.{provider}")))
    }

    fn upstream(&self, kind: &'static str, provider: &Arc<str>) -> Arc<dyn UpstreamSink> {
        Arc::new(Named(self.clone(), format!("upstream.{kind}.{provider}")))
    }

    fn verifications(&self) -> Arc<dyn VerificationSink> {
        Arc::new(Named(self.clone(), "verifications".to_owned()))
    }
}

impl CacheSink for Named {
    fn hit(&self) {
        self.0.add(format!("{}.hit", self.1));
    }
    fn miss(&self) {
        self.0.add(format!("{}.miss", self.1));
    }
    fn evicted(&self) {
        self.0.add(format!("{}.evicted", self.1));
    }
}

impl UpstreamSink for Named {
    fn observe(&self, _: Duration, ok: bool) {
        self.0
            .add(format!("{}.{}", self.1, if ok { "ok" } else { "failed" }));
    }
}

impl VerificationSink for Named {
    fn verified(&self, valid: bool) {
        self.0.add(format!(
            "{}.{}",
            self.1,
            if valid { "valid" } else { "invalid" }
        ));
    }
    fn waited(&self) {
        self.0.add(format!("{}.waited", self.1));
    }
}
