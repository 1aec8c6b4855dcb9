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

/// `state`: `{backend: memory}`, or `{backend: redis, …}` with exactly one of `url` (one Redis), `sentinel`
/// (a Sentinel-managed master) or `cluster` (a Redis Cluster); `password`, `key_prefix`, `timeout_ms` and
/// TLS (`rediss://`) apply to all three.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Defaults to `memory`.
    pub backend: Backend,
    /// One Redis: `redis://host:port/db` or `rediss://` for TLS; put no password in it, use `password`.
    /// Defaults to unset.
    pub url: Option<String>,
    /// A master managed by Redis Sentinel, asked of the sentinels and followed through a failover.
    /// Defaults to unset.
    pub sentinel: Option<SentinelConfig>,
    /// A Redis Cluster; MOVED/ASK redirections are followed, and the denylist's keys share one hash slot.
    /// Defaults to unset.
    pub cluster: Option<ClusterConfig>,
    /// Prefix of every Redis key and channel, so several deployments can share one Redis. With `cluster`
    /// the denylist's keys put it in a hash tag (`{portcullis:}revocations`) unless it holds one already.
    /// Defaults to `portcullis:`.
    pub key_prefix: String,
    /// The Redis password (`{env:}`/`{file:}`), sent to the data nodes (not to the sentinels). Defaults to
    /// none.
    pub password: Option<SecretRef>,
    /// How often the whole denylist is read back from Redis, besides the feed (which a replica also
    /// reads from the start after every reconnect). Defaults to 30.
    pub resync_seconds: u64,
    /// Timeout of one Redis command, in milliseconds; a DPoP check that cannot get an answer within it fails
    /// closed. Defaults to 500.
    pub timeout_ms: u64,
}

/// `state.sentinel`: `{master_name: mymaster, urls: [redis://sentinel-1:26379, …]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`). Required.
    pub master_name: String,
    /// The sentinels, asked in order for the current master: `redis://host:26379` (or `rediss://`: then
    /// the master is reached over TLS too). Required, at least one.
    pub urls: Vec<String>,
}

/// `state.cluster`: `{urls: [redis://node-1:7000, …]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Some nodes of the cluster (the rest are learnt from them): `redis://host:7000` or `rediss://`.
    /// Required, at least one.
    pub urls: Vec<String>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::Memory,
            url: None,
            sentinel: None,
            cluster: None,
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
    let named = [
        ("state.url", config.url.is_some()),
        ("state.sentinel", config.sentinel.is_some()),
        ("state.cluster", config.cluster.is_some()),
    ];
    let given: Vec<&str> = named
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
    match config.backend {
        Backend::Memory => {
            for path in &given {
                problems.add(*path, "is only used with backend: redis");
            }
            if config.password.is_some() {
                problems.add("state.password", "is only used with backend: redis");
            }
        }
        Backend::Redis if given.is_empty() => problems.add(
            "state.url",
            "is required with backend: redis (redis://host:6379/0 or rediss://…), or state.sentinel or state.cluster",
        ),
        Backend::Redis if given.len() > 1 => problems.add(
            given[1],
            format!("only one of state.url, state.sentinel and state.cluster may be set (also set: {})", given[0]),
        ),
        Backend::Redis => {}
    }
    if let Some(url) = &config.url {
        check_redis_url(problems, "state.url", url, true);
    }
    if let Some(sentinel) = &config.sentinel {
        if sentinel.master_name.trim().is_empty() {
            problems.add("state.sentinel.master_name", "must not be empty");
        }
        check_urls(problems, "state.sentinel.urls", &sentinel.urls, false);
    }
    if let Some(cluster) = &config.cluster {
        check_urls(problems, "state.cluster.urls", &cluster.urls, false);
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

/// A node list: at least one, each a Redis URL, all with TLS or all without.
fn check_urls(problems: &mut Problems, path: &str, urls: &[String], database: bool) {
    if urls.is_empty() {
        problems.add(path, "must name at least one node (redis://host:port)");
    }
    for (i, url) in urls.iter().enumerate() {
        check_redis_url(problems, &format!("{path}[{i}]"), url, database);
    }
    let tls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
    if tls != 0 && tls != urls.len() {
        problems.add(path, "must all be rediss:// (TLS) or all redis://");
    }
}

/// `redis://` or `rediss://`, with a host, without a password; a database number only where one applies
/// (not for sentinels and cluster nodes).
fn check_redis_url(problems: &mut Problems, path: &str, url: &str, database: bool) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") => {
            if u.password().is_some() {
                problems.add(
                    path,
                    "must not carry a password: use state.password ({env:} or {file:})",
                );
            }
            if u.host_str().is_none_or(str::is_empty) {
                problems.add(path, "must name a host");
            }
            if !database && !matches!(u.path(), "" | "/" | "/0") {
                problems.add(
                    path,
                    "must not name a database (only database 0 exists here)",
                );
            }
        }
        Ok(_) => problems.add(path, "must be a redis:// or rediss:// URL"),
        Err(e) => problems.add(path, format!("not a URL: {e}")),
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
        let config = Config::from_yaml_str(&format!(
            "{PROVIDERS}state: {{backend: redis, sentinel: {{master_name: mymaster, urls: ['redis://s1:26379', 'redis://s2:26379']}}}}"
        ))
        .unwrap();
        let sentinel = config.state.sentinel.unwrap();
        assert_eq!(sentinel.master_name, "mymaster");
        assert_eq!(sentinel.urls.len(), 2);
        let config = Config::from_yaml_str(&format!(
            "{PROVIDERS}state: {{backend: redis, cluster: {{urls: ['rediss://c1:7000', 'rediss://c2:7000/0']}}}}"
        ))
        .unwrap();
        assert_eq!(config.state.cluster.unwrap().urls.len(), 2);
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
            (
                "state: {backend: redis, url: 'redis://h', cluster: {urls: ['redis://c:7000']}}",
                "state.cluster: only one of state.url, state.sentinel and state.cluster",
            ),
            (
                "state: {backend: redis, sentinel: {master_name: m, urls: ['redis://s:26379']}, cluster: {urls: ['redis://c:7000']}}",
                "state.cluster: only one of",
            ),
            (
                "state: {sentinel: {master_name: m, urls: ['redis://s:26379']}}",
                "state.sentinel: is only used with backend: redis",
            ),
            (
                "state: {backend: redis, sentinel: {master_name: ' ', urls: ['redis://s:26379']}}",
                "state.sentinel.master_name: must not be empty",
            ),
            (
                "state: {backend: redis, sentinel: {master_name: m, urls: []}}",
                "state.sentinel.urls: must name at least one node",
            ),
            (
                "state: {backend: redis, sentinel: {urls: ['redis://s:26379']}}",
                "state.sentinel: missing field `master_name`",
            ),
            (
                "state: {backend: redis, sentinel: {master_name: m, urls: ['redis://s:26379', 'http://t:1']}}",
                "state.sentinel.urls[1]: must be a redis://",
            ),
            (
                "state: {backend: redis, cluster: {urls: ['redis://:pw@c:7000']}}",
                "state.cluster.urls[0]: must not carry a password",
            ),
            (
                "state: {backend: redis, cluster: {urls: ['redis://c:7000/2']}}",
                "state.cluster.urls[0]: must not name a database",
            ),
            (
                "state: {backend: redis, cluster: {urls: ['rediss://c:7000', 'redis://d:7000']}}",
                "state.cluster.urls: must all be rediss://",
            ),
            (
                "state: {backend: redis, cluster: {urls: ['redis://c:7000'], nodes: 3}}",
                "state.cluster.nodes: unknown field",
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
