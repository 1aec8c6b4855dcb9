//! `type: github`: GitHub access tokens, checked with `GET {api_base}/user`.

use serde::Deserialize;

use super::{default_max_ttl, validate_http_upstream, Problems, UpstreamSettings};

/// `type: github`: GitHub access tokens, checked with `GET {api_base}/user`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// The API base; set it for GitHub Enterprise (`https://github.example.com/api/v3`).
    /// Defaults to `https://api.github.com`.
    #[serde(default = "default_github_api")]
    pub api_base: String,
    /// Also read the user's organisations (`GET /user/orgs`, needs the `read:org` scope). Defaults to false.
    #[serde(default)]
    pub fetch_orgs: bool,
    /// When set, the user must belong to one of these organisations (implies `fetch_orgs`).
    #[serde(default)]
    pub allowed_orgs: Vec<String>,
    /// Results are cached this long, keyed by a digest of the token. Defaults to 300.
    #[serde(default = "default_max_ttl")]
    pub cache_ttl_seconds: u64,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// Allow a plain `http://` API base on a host other than loopback. Defaults to false.
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
}

fn default_github_api() -> String {
    "https://api.github.com".to_owned()
}

/// Checks a `github` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &GithubConfig) {
    validate_http_upstream(
        problems,
        path,
        ("api_base", &c.api_base),
        c.dangerous_allow_plain_http,
        &c.upstream,
    );
}
