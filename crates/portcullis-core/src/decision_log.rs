//! The decision log: one structured event per decision on the tracing target [`TARGET`]
//! (`portcullis::decision`), which `telemetry` writes as one JSON line on stdout. Denials, errors and
//! permissive-mode would-denies are always logged; allows are sampled at `decision_log.allow_sample_rate`.
//!
//! A line names the decision, never the credential: `time`, `authz.decision_id`, `authz.route`,
//! `provider.name`, `principal` (the subject), `authz.decision`, `authz.reason`, `source.address` (the
//! client's), `request.id` (`x-request-id`) and `trace.id` (W3C): the same field names as the server's own
//! log lines. Nothing is formatted when the target is filtered out (`RUST_LOG=portcullis::decision=off`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::authorizer::Verdict;
use crate::config::DecisionLogConfig;
use crate::decision::Decision;
use crate::request::RequestView;

/// The tracing target of decision lines.
pub const TARGET: &str = "portcullis::decision";

/// Where a check came from, beyond the request view: what the transport knows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The downstream client's address as Envoy saw it (`ip`), and its port (0 when unknown).
    pub source_ip: &'a str,
    pub source_port: u32,
    /// The W3C trace id (the check span's, else the caller's `traceparent`'s), empty when none.
    pub trace_id: &'a str,
}

/// Which decisions are logged.
pub struct DecisionLog {
    /// Allows are logged when a draw from [`Sampler`] is below this: 0 never, `u64::MAX` always.
    allow_threshold: u64,
    sampler: Sampler,
}

// === impl DecisionLog ===

impl DecisionLog {
    pub fn new(config: &DecisionLogConfig) -> DecisionLog {
        let rate = config.allow_sample_rate.clamp(0.0, 1.0);
        let allow_threshold = if rate >= 1.0 {
            u64::MAX
        } else {
            // Exact enough: a rate is a share, not a count.
            (rate * u64::MAX as f64) as u64
        };
        DecisionLog {
            allow_threshold,
            sampler: Sampler::new(),
        }
    }

    /// Logs `verdict` if its kind is always logged or it is a sampled allow.
    pub fn record(&self, verdict: &Verdict<'_>, request: &RequestView<'_>, origin: &Origin<'_>) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        if let Decision::Allow(_) = verdict.decision {
            if !self.sample_allow() {
                return;
            }
        }
        let (provider, principal) = match &verdict.decision {
            Decision::Allow(identity) => (Some(&*identity.provider), identity.subject.as_deref()),
            Decision::Permit {
                identity: Some(identity),
                ..
            } => (Some(&*identity.provider), identity.subject.as_deref()),
            Decision::Permit {
                identity: None,
                would_deny,
            } => (
                would_deny.provider.as_deref(),
                would_deny.principal.as_deref(),
            ),
            Decision::Deny(denial) => (denial.provider.as_deref(), denial.principal.as_deref()),
            Decision::Error(_) => (None, None),
        };
        let time =
            chrono::DateTime::from_timestamp_micros(crate::clock::Clock::system().now_micros())
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let source = if origin.source_ip.is_empty() {
            String::new()
        } else if origin.source_ip.contains(':') {
            format!("[{}]:{}", origin.source_ip, origin.source_port)
        } else {
            format!("{}:{}", origin.source_ip, origin.source_port)
        };
        tracing::info!(
            target: TARGET,
            time = %time,
            authz.decision_id = verdict.decision_id.as_str(),
            authz.route = verdict.route.name(),
            provider.name = provider.unwrap_or(""),
            principal = principal.unwrap_or(""),
            authz.decision = verdict.decision.kind(),
            authz.reason = verdict.decision.reason(),
            source.address = %source,
            request.id = request.request_id,
            trace.id = origin.trace_id,
        );
    }

    fn sample_allow(&self) -> bool {
        match self.allow_threshold {
            0 => false,
            u64::MAX => true,
            threshold => self.sampler.next() < threshold,
        }
    }
}

/// Draws for sampling: a shared SplitMix64 sequence (one atomic add per draw, no lock, no system call),
/// seeded once from the clock. Not a secret; only its spread matters.
struct Sampler(AtomicU64);

impl Sampler {
    fn new() -> Sampler {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        Sampler(AtomicU64::new(seed))
    }

    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_are_sampled_at_the_rate() {
        let log = |rate| {
            DecisionLog::new(&DecisionLogConfig {
                allow_sample_rate: rate,
            })
        };
        let (none, all, tenth) = (log(0.0), log(1.0), log(0.1));
        let count = |l: &DecisionLog| (0..10_000).filter(|_| l.sample_allow()).count();
        assert_eq!(count(&none), 0);
        assert_eq!(count(&all), 10_000);
        let n = count(&tenth);
        assert!((800..1200).contains(&n), "{n} of 10000 at 0.1");
    }
}
