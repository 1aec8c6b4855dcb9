//! Counters exported at `/metrics` in the Prometheus text format. Labels are `&'static str`; recording is
//! one relaxed atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::{Decision, DenyReason, Unavailable};
use crate::providers::Providers;

#[derive(Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: [AtomicU64; DenyReason::ALL.len()],
    errors: [AtomicU64; Unavailable::ALL.len()],
}

impl Metrics {
    pub fn record(&self, decision: &Decision) {
        match decision {
            Decision::Allow(_) => self.allowed.fetch_add(1, Ordering::Relaxed),
            Decision::Deny(denial) => {
                let i = DenyReason::ALL
                    .iter()
                    .position(|r| *r == denial.reason)
                    .expect("every reason is listed in ALL");
                self.denied[i].fetch_add(1, Ordering::Relaxed)
            }
            Decision::Error(why) => {
                let i = Unavailable::ALL
                    .iter()
                    .position(|u| u == why)
                    .expect("every unavailability is listed in ALL");
                self.errors[i].fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    pub fn allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }

    pub fn denied(&self, reason: DenyReason) -> u64 {
        let i = DenyReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.denied[i].load(Ordering::Relaxed)
    }

    /// Renders every metric, with the providers' key set state.
    pub fn render(&self, providers: &Providers, ready: bool) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP portcullis_checks_total Check decisions by outcome and reason."
        );
        let _ = writeln!(out, "# TYPE portcullis_checks_total counter");
        let _ = writeln!(
            out,
            "portcullis_checks_total{{decision=\"allow\",reason=\"\"}} {}",
            self.allowed()
        );
        for (reason, count) in DenyReason::ALL.iter().zip(&self.denied) {
            let _ = writeln!(
                out,
                "portcullis_checks_total{{decision=\"deny\",reason=\"{}\"}} {}",
                reason.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        for (why, count) in Unavailable::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "portcullis_checks_total{{decision=\"error\",reason=\"{}\"}} {}",
                why.as_str(),
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
            "# HELP portcullis_token_cache_entries Verified tokens cached."
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
