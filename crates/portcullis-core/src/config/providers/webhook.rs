//! `type: webhook`: a custom HTTP auth endpoint (llama-stack's custom auth provider format).

use serde::Deserialize;

use super::{validate_http_upstream, validate_tls, Problems, TlsSettings, UpstreamSettings};

/// `type: webhook`: a custom HTTP auth endpoint, in the format of llama-stack's custom auth provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receives `POST {"api_key": …, "request": {"path", "headers", "params"}}`.
    pub endpoint: String,
    /// Cache authenticated results this long, keyed by a digest of the token. Defaults to 0 (no cache).
    #[serde(default)]
    pub cache_ttl_seconds: u64,
    /// Also take JWT-shaped tokens (as llama-stack's custom provider does): a JWT whose `iss` no `jwt`
    /// provider of the route owns comes here. Defaults to false.
    #[serde(default)]
    pub accept_jwt: bool,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// TLS for the webhook calls. Defaults to the platform's roots.
    #[serde(default)]
    pub tls: TlsSettings,
    /// Allow a plain `http://` endpoint on a host other than loopback. Defaults to false.
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
}

/// Checks a `webhook` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &WebhookConfig) {
    validate_http_upstream(
        problems,
        path,
        ("endpoint", &c.endpoint),
        c.dangerous_allow_plain_http,
        &c.upstream,
    );
    validate_tls(problems, path, &c.tls);
}
