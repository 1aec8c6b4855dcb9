//! Counters exported at `/metrics` in the Prometheus text format. Every label is a `&'static str` known at
//! start; recording is a lookup in a read-only table and one relaxed atomic add.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::{Decision, DenyReason, Unavailable, UnmetReason};
use crate::providers::Providers;

/// How a check arrived: the `transport` label of `portcullis_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Envoy's ext_authz gRPC `Check`.
    Grpc,
    /// The HTTP forward-auth listener (`server.http_listen`).
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

/// Check decisions by `transport` (grpc, http), `decision` (allow, permit, deny, error) and `reason`.
pub struct Metrics {
    labels: Vec<(Transport, &'static str, &'static str)>,
    index: HashMap<(Transport, &'static str, &'static str), usize>,
    counts: Vec<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reasons: Vec<&'static str> = DenyReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(UnmetReason::ALL.iter().map(|r| r.as_str()))
            .collect();
        let mut decisions = vec![("allow", "")];
        decisions.extend(reasons.iter().map(|r| ("deny", *r)));
        decisions.extend(reasons.iter().map(|r| ("permit", *r)));
        decisions.extend(Unavailable::ALL.iter().map(|u| ("error", u.as_str())));
        let labels: Vec<(Transport, &'static str, &'static str)> = Transport::ALL
            .iter()
            .flat_map(|&t| decisions.iter().map(move |&(d, r)| (t, d, r)))
            .collect();
        let index = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
        let counts = labels.iter().map(|_| AtomicU64::new(0)).collect();
        Metrics {
            labels,
            index,
            counts,
        }
    }
}

impl Metrics {
    pub fn record(&self, transport: Transport, decision: &Decision) {
        if let Some(&i) = self
            .index
            .get(&(transport, decision.kind(), decision.reason()))
        {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renders every metric, with the providers' key set state.
    pub fn render(&self, providers: &Providers, ready: bool) -> String {
        let mut out = String::with_capacity(8192);
        let _ = writeln!(
            out,
            "# HELP portcullis_checks_total Check decisions by transport (grpc, http), decision (allow, permit = allowed in permissive mode but would be denied, deny, error) and reason."
        );
        let _ = writeln!(out, "# TYPE portcullis_checks_total counter");
        for ((transport, decision, reason), count) in self.labels.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "portcullis_checks_total{{transport=\"{}\",decision=\"{decision}\",reason=\"{reason}\"}} {}",
                transport.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_jwks_fetches_total Key set fetches by provider and result."
        );
        let _ = writeln!(out, "# TYPE portcullis_jwks_fetches_total counter");
        for (name, store) in providers.named_key_stores() {
            for (result, n) in [("ok", &store.stats.ok), ("failed", &store.stats.failed)] {
                let _ = writeln!(
                    out,
                    "portcullis_jwks_fetches_total{{provider=\"{name}\",result=\"{result}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_jwks_keys Keys in the current key set of each provider."
        );
        let _ = writeln!(out, "# TYPE portcullis_jwks_keys gauge");
        for (name, store) in providers.named_key_stores() {
            let keys = store.current().map_or(0, |k| k.len());
            let _ = writeln!(out, "portcullis_jwks_keys{{provider=\"{name}\"}} {keys}");
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_token_cache_entries Verified JWTs cached."
        );
        let _ = writeln!(out, "# TYPE portcullis_token_cache_entries gauge");
        let _ = writeln!(
            out,
            "portcullis_token_cache_entries {}",
            providers.cached_tokens()
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_ready 1 when every provider can decide."
        );
        let _ = writeln!(out, "# TYPE portcullis_ready gauge");
        let _ = writeln!(out, "portcullis_ready {}", u8::from(ready));
        out
    }
}

/// The shared state's gauges and counters: whether its backend is reachable, faults seen, denylist size.
pub fn render_state(out: &mut String, backend: &str, healthy: bool, errors: u64, entries: usize) {
    let _ = writeln!(
        out,
        "# HELP portcullis_state_up 1 while the shared state backend (memory, redis) is reachable."
    );
    let _ = writeln!(out, "# TYPE portcullis_state_up gauge");
    let _ = writeln!(
        out,
        "portcullis_state_up{{backend=\"{backend}\"}} {}",
        u8::from(healthy)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_redis_errors_total Failed calls to Redis (the shared state backend)."
    );
    let _ = writeln!(out, "# TYPE portcullis_redis_errors_total counter");
    let _ = writeln!(out, "portcullis_redis_errors_total {errors}");
    let _ = writeln!(
        out,
        "# HELP portcullis_revocations Entries in this replica's copy of the denylist."
    );
    let _ = writeln!(out, "# TYPE portcullis_revocations gauge");
    let _ = writeln!(out, "portcullis_revocations {entries}");
}
