//! `type: mtls`: the client certificate identity Envoy verified.

use serde::Deserialize;

use super::Problems;

/// `type: mtls`: the client certificate identity Envoy verified (`source.principal`, `source.certificate`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// SPIFFE trust domains accepted (`spiffe://<domain>/…`). Defaults to any.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// When set, the principal (SPIFFE ID or SAN) must match one of these; `*` matches within one path
    /// segment, e.g. `spiffe://cluster.local/ns/payments/sa/*`.
    #[serde(default)]
    pub san_patterns: Vec<String>,
}

/// Checks an `mtls` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &MtlsConfig) {
    for (i, domain) in c.trust_domains.iter().enumerate() {
        if domain.is_empty() || domain.contains('/') || domain.contains(':') {
            problems.add(
                format!("{path}.trust_domains[{i}]"),
                "must be a bare trust domain such as `cluster.local`",
            );
        }
    }
    for (i, pattern) in c.san_patterns.iter().enumerate() {
        if pattern.is_empty() {
            problems.add(format!("{path}.san_patterns[{i}]"), "must not be empty");
        }
    }
}
