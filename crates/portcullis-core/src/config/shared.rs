//! The `revocation` and `state` sections: the denylist's admin API and Auth0 log stream, and where state
//! shared across replicas lives (memory for one replica, Redis for several).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Problems, SecretRef};

/// The longest a denylist entry lives: a year.
pub const MAX_TTL_SECONDS: u64 = 366 * 24 * 3600;

/// `revocation`: the denylist and what feeds it.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// How long an entry lives when its request names no `ttl_seconds` (and for Auth0 events). Keep it at
    /// least as long as the longest token lifetime, or a revoked token works again once its entry expires.
    /// Defaults to 86400.
    pub default_ttl_seconds: u64,
    /// The admin API (`/admin/revocations` on the admin port) is on only when this is set; clients send it
    /// as `Authorization: Bearer <secret>`. Defaults to unset (off).
    pub admin_secret: Option<SecretRef>,
    /// The Auth0 log stream receiver (`POST /events/auth0` on the admin port) is on only when this is set:
    /// the Custom Webhook stream's `Authorization` token. Defaults to unset (off).
    pub auth0_log_stream_secret: Option<SecretRef>,
    /// Entries made from Auth0 events apply only to tokens of this issuer (your tenant's `iss`, e.g.
    /// `https://example.eu.auth0.com/`). Defaults to unset: every issuer.
    pub auth0_issuer: Option<String>,
    /// The largest Auth0 batch body accepted; a larger one is answered 413. Defaults to 1048576 (1 MiB).
    pub auth0_max_body_bytes: usize,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            default_ttl_seconds: 86_400,
            admin_secret: None,
            auth0_log_stream_secret: None,
            auth0_issuer: None,
            auth0_max_body_bytes: 1 << 20,
        }
    }
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In this process: right for one replica.
    #[default]
    Memory,
    /// A Redis server every replica shares: the denylist and the DPoP replay cache.
    Redis,
}

/// `state`: `{backend: memory}` or `{backend: redis, url: redis://host:6379/0, key_prefix: "portcullis:"}`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Defaults to `memory`.
    pub backend: Backend,
    /// `redis://host:port/db` or `rediss://` for TLS. Required with `backend: redis`; put no password in it,
    /// use `password`.
    pub url: Option<String>,
    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    /// Defaults to `portcullis:`.
    pub key_prefix: String,
    /// The Redis password (`{env:}`/`{file:}`). Defaults to none.
    pub password: Option<SecretRef>,
    /// How often the whole denylist is read back from Redis, besides the pub/sub feed. Defaults to 30.
    pub resync_seconds: u64,
    /// Timeout of one Redis command, in milliseconds; a DPoP check that cannot get an answer within it fails
    /// closed. Defaults to 500.
    pub timeout_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::Memory,
            url: None,
            key_prefix: "portcullis:".to_owned(),
            password: None,
            resync_seconds: 30,
            timeout_ms: 500,
        }
    }
}

pub(crate) fn validate_revocation(problems: &mut Problems, config: &RevocationConfig) {
    if config.default_ttl_seconds == 0 || config.default_ttl_seconds > MAX_TTL_SECONDS {
        problems.add(
            "revocation.default_ttl_seconds",
            format!("must be between 1 and {}", MAX_TTL_SECONDS),
        );
    }
    if !(1024..=64 << 20).contains(&config.auth0_max_body_bytes) {
        problems.add(
            "revocation.auth0_max_body_bytes",
            "must be between 1024 and 67108864",
        );
    }
    if config.auth0_issuer.as_deref() == Some("") {
        problems.add("revocation.auth0_issuer", "must not be empty");
    }
}

pub(crate) fn validate_state(problems: &mut Problems, config: &StateConfig) {
    match (config.backend, &config.url) {
        (Backend::Redis, None) => problems.add(
            "state.url",
            "is required with backend: redis (redis://host:6379/0 or rediss://…)",
        ),
        (Backend::Redis, Some(url)) => match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss") => {
                if u.password().is_some() {
                    problems.add(
                        "state.url",
                        "must not carry a password: use state.password ({env:} or {file:})",
                    );
                }
                if u.host_str().is_none_or(str::is_empty) {
                    problems.add("state.url", "must name a host");
                }
            }
            Ok(_) => problems.add("state.url", "must be a redis:// or rediss:// URL"),
            Err(e) => problems.add("state.url", format!("not a URL: {e}")),
        },
        (Backend::Memory, Some(_)) => problems.add("state.url", "is only used with backend: redis"),
        (Backend::Memory, None) => {}
    }
    if config.backend == Backend::Memory && config.password.is_some() {
        problems.add("state.password", "is only used with backend: redis");
    }
    if config.key_prefix.is_empty() || config.key_prefix.chars().any(|c| c.is_control()) {
        problems.add(
            "state.key_prefix",
            "must be non-empty, without control characters",
        );
    }
    if !(1..=3600).contains(&config.resync_seconds) {
        problems.add("state.resync_seconds", "must be between 1 and 3600");
    }
    if !(10..=60_000).contains(&config.timeout_ms) {
        problems.add("state.timeout_ms", "must be between 10 and 60000");
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Backend, Config};

    const PROVIDERS: &str =
        "providers: [{name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}]\n";

    fn problems(yaml: &str) -> Vec<String> {
        Config::from_yaml_str(&format!("{PROVIDERS}{yaml}"))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_are_memory_and_a_day() {
        let config = Config::from_yaml_str(PROVIDERS).unwrap();
        assert_eq!(config.state.backend, Backend::Memory);
        assert_eq!(config.revocation.default_ttl_seconds, 86_400);
        assert_eq!(config.revocation.admin_secret, None);
        let config = Config::from_yaml_str(&format!(
            "{PROVIDERS}state: {{backend: redis, url: 'rediss://cache.example:6380/1', password: {{env: P}}}}"
        ))
        .unwrap();
        assert_eq!(config.state.backend, Backend::Redis);
        assert_eq!(config.state.key_prefix, "portcullis:");
    }

    #[test]
    fn problems_name_their_field() {
        let found = problems(
            "state: {backend: redis}\nrevocation: {default_ttl_seconds: 0, auth0_max_body_bytes: 10, colour: x}",
        );
        let has = |p: &str| found.iter().any(|f| f.starts_with(p));
        assert!(
            has("state.url: is required with backend: redis"),
            "{found:?}"
        );
        assert!(has("revocation.colour: unknown field"), "{found:?}");
        let found = problems("revocation: {default_ttl_seconds: 0, auth0_max_body_bytes: 10}");
        let has = |p: &str| found.iter().any(|f| f.starts_with(p));
        assert!(
            has("revocation.default_ttl_seconds: must be between"),
            "{found:?}"
        );
        assert!(
            has("revocation.auth0_max_body_bytes: must be between"),
            "{found:?}"
        );
        for (yaml, want) in [
            (
                "state: {backend: redis, url: 'redis://:pw@h:6379/0'}",
                "state.url: must not carry a password",
            ),
            (
                "state: {backend: redis, url: 'http://h:6379'}",
                "state.url: must be a redis://",
            ),
            (
                "state: {url: 'redis://h:6379'}",
                "state.url: is only used with backend: redis",
            ),
            (
                "state: {backend: etcd}",
                "state.backend: unknown variant `etcd`",
            ),
            (
                "state: {backend: redis, url: 'redis://h', resync_seconds: 0}",
                "state.resync_seconds: must be between",
            ),
        ] {
            let found = problems(yaml);
            assert!(
                found.iter().any(|f| f.starts_with(want)),
                "{yaml}: {found:?}"
            );
        }
    }
}
