//! The `dpop` settings of a `jwt` or `introspection` provider: sender-constrained tokens (RFC 9449).

use serde::Deserialize;

use super::{AlgorithmName, Problems, SecretRef};

/// How a provider treats DPoP (RFC 9449).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopMode {
    /// The `DPoP` scheme is refused; a token bound with `cnf.jkt` is refused too (it cannot be proven).
    Off,
    /// A token bound with `cnf.jkt` must come as `Authorization: DPoP <token>` with a valid proof; an
    /// unbound token may still use `Bearer`.
    #[default]
    Optional,
    /// Every token must be bound and proven.
    Required,
}

// === impl DpopMode ===

impl DpopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DpopMode::Off => "off",
            DpopMode::Optional => "optional",
            DpopMode::Required => "required",
        }
    }
}

/// `dpop:` of a provider. Every field has a default, so `dpop: {mode: required}` is enough.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// `off`, `optional` or `required`. Defaults to `optional`: a bound token is never accepted without
    /// its proof, an unbound one still is as `Bearer`.
    pub mode: DpopMode,
    /// The proof signature algorithms accepted (asymmetric only; sent as `algs` in the challenge).
    /// Defaults to `[ES256, ES384, EdDSA, PS256, PS384, PS512, RS256]`.
    pub algorithms: Vec<AlgorithmName>,
    /// How old a proof's `iat` may be, and how far in the future (then with the same window); also how
    /// long its `jti` is remembered. Defaults to 300; between 1 and 3600.
    pub max_age_seconds: u64,
    /// Require a server nonce in every proof (`use_dpop_nonce` with a fresh `DPoP-Nonce`, RFC 9449 §8).
    /// Nonces are HMACs of a time window under `nonce_secret`, so every replica accepts any replica's
    /// nonce. Defaults to false.
    pub nonce: bool,
    /// The nonce key, `{env: NAME}` or `{file: PATH}`; required with `nonce: true`, at least 32 bytes.
    pub nonce_secret: Option<SecretRef>,
    /// The origin clients see (`https://api.example.com`), when Envoy sits behind another proxy that
    /// changes scheme or host; the proof's `htu` is compared with it plus the request path. Defaults to
    /// Envoy's own scheme and host.
    pub external_origin: Option<String>,
    /// How many proof `jti`s are remembered; when full of unexpired ones, proofs are refused (fail
    /// closed) rather than forgetting one. Defaults to 100000.
    pub replay_cache_entries: usize,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            mode: DpopMode::Optional,
            algorithms: vec![
                AlgorithmName::ES256,
                AlgorithmName::ES384,
                AlgorithmName::EdDSA,
                AlgorithmName::PS256,
                AlgorithmName::PS384,
                AlgorithmName::PS512,
                AlgorithmName::RS256,
            ],
            max_age_seconds: 300,
            nonce: false,
            nonce_secret: None,
            external_origin: None,
            replay_cache_entries: 100_000,
        }
    }
}

// === impl DpopConfig ===

impl DpopConfig {
    /// Reports every problem under `path` (`providers[0].dpop`).
    pub(crate) fn validate(&self, problems: &mut Problems, path: &str) {
        if self.algorithms.is_empty() {
            problems.add(format!("{path}.algorithms"), "must not be empty");
        }
        for (i, alg) in self.algorithms.iter().enumerate() {
            if alg.is_hmac() {
                problems.add(
                    format!("{path}.algorithms[{i}]"),
                    "a DPoP proof is signed with an asymmetric key (RFC 9449 §4.2); HMAC is refused",
                );
            }
        }
        if !(1..=3600).contains(&self.max_age_seconds) {
            problems.add(
                format!("{path}.max_age_seconds"),
                "must be between 1 and 3600",
            );
        }
        if self.nonce && self.nonce_secret.is_none() {
            problems.add(
                format!("{path}.nonce_secret"),
                "is required with `nonce: true` (every replica must share it)",
            );
        }
        if self.replay_cache_entries == 0 {
            problems.add(format!("{path}.replay_cache_entries"), "must be at least 1");
        }
        if let Some(origin) = &self.external_origin {
            let ok = url::Url::parse(origin).ok().is_some_and(|u| {
                matches!(u.scheme(), "https" | "http")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && !origin.ends_with('/')
            });
            if !ok {
                problems.add(
                    format!("{path}.external_origin"),
                    "must be an origin such as `https://api.example.com` (scheme and host, optional port, no path)",
                );
            }
        }
    }
}
