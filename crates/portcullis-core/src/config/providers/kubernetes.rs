//! `type: kubernetes`: service-account tokens, checked with the API server's TokenReview.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    default_negative_ttl, validate_http_upstream, validate_tls, Problems, SecretRef, TlsSettings,
    UpstreamSettings,
};

/// The service-account token and CA every pod has mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `type: kubernetes`: Kubernetes service-account tokens, checked with the API server's TokenReview
/// (`POST /apis/authentication.k8s.io/v1/tokenreviews`). The principal is the username
/// (`system:serviceaccount:<namespace>:<name>`), the groups are the `groups` attribute.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The API server. Defaults to `https://kubernetes.default.svc`.
    #[serde(default = "default_api_server")]
    pub api_server: String,
    /// The audiences a token must be valid for (sent in the review; the API server's answer must name one).
    /// Defaults to none: the API server's own audience.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// portcullis's own credential for the review (its service account needs the `system:auth-delegator`
    /// cluster role). A file is read again at every review, so a rotated token is picked up. Defaults to
    /// `{file: /var/run/secrets/kubernetes.io/serviceaccount/token}`.
    #[serde(default = "default_service_account_token")]
    pub token: SecretRef,
    /// Defaults to `ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt`.
    #[serde(default = "default_service_account_tls")]
    pub tls: TlsSettings,
    /// How long a review's answer is cached, keyed by a digest of the token, never past the token's `exp`.
    /// Defaults to 60.
    #[serde(default = "default_review_ttl")]
    pub cache_ttl_seconds: u64,
    /// How long a refused token's answer is cached. Defaults to 10; 0 disables.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_seconds: u64,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// Allow a plain `http://` API server on a host other than loopback. Defaults to false.
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
}

fn default_api_server() -> String {
    "https://kubernetes.default.svc".to_owned()
}
fn default_service_account_token() -> SecretRef {
    SecretRef::File(PathBuf::from(SERVICE_ACCOUNT_DIR).join("token"))
}
fn default_service_account_tls() -> TlsSettings {
    TlsSettings {
        ca_file: Some(PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt")),
        insecure_skip_verify: false,
    }
}
fn default_review_ttl() -> u64 {
    60
}

/// Checks a `kubernetes` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &KubernetesConfig) {
    validate_http_upstream(
        problems,
        path,
        ("api_server", &c.api_server),
        c.dangerous_allow_plain_http,
        &c.upstream,
    );
    validate_tls(problems, path, &c.tls);
    for (i, aud) in c.audiences.iter().enumerate() {
        if aud.is_empty() {
            problems.add(format!("{path}.audiences[{i}]"), "must not be empty");
        }
    }
    if c.cache_ttl_seconds == 0 {
        problems.add(format!("{path}.cache_ttl_seconds"), "must be at least 1");
    }
}
