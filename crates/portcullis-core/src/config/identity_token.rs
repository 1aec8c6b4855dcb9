//! The `identity_token` section: a short-lived JWT signed by portcullis for the upstream, so a service can
//! verify who the caller is instead of trusting headers. Typed serde structs and their checks; the signer
//! is `identity_token.rs`.

use std::path::PathBuf;

use serde::Deserialize;

use super::policy::{PolicyConfig, RouteIdentityToken};
use super::secret::SecretRef;
use super::Problems;
use crate::request::is_header_name;

/// The claims an identity token may copy from the identity, beside the ones it always has.
pub const COPYABLE_CLAIMS: &[&str] = &[
    "sub",
    "scope",
    "permissions",
    "org_id",
    "act",
    "email",
    "azp",
    "client_id",
    "amr",
    "acr",
    "auth_time",
];

/// `identity_token: {…}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityTokenConfig {
    /// The request header that carries the token to the upstream, set with overwrite so a client copy
    /// never survives. Defaults to `x-auth-identity`.
    #[serde(default = "default_header")]
    pub header: String,
    /// The token's `iss`, also the `issuer` of the discovery document on the admin port. Required.
    pub issuer: String,
    /// The token's `aud`: the upstream that verifies it. A route may name another. Required.
    pub audience: String,
    /// The token's lifetime; never beyond the credential's own `exp`. Defaults to 60.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// The signing algorithm; only `ES256` (ECDSA P-256). Defaults to `ES256`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// A PKCS#8 PEM P-256 private key (`{file: …}` or `{env: …}`). Without it a key is generated and kept
    /// in `state_dir`, so restarts and reloads keep it. Several replicas must share one key (or one state
    /// directory): each publishes only its own. Defaults to a generated key.
    #[serde(default)]
    pub signing_key: Option<SecretRef>,
    /// Where a generated key is kept (created with mode 0700, the key file 0600). Defaults to
    /// `.portcullis-state`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Claims copied from the identity when it has them: `sub`, `scope` (the granted scopes),
    /// `permissions`, `org_id`, `act` and a few more (see the README). The token always has `iss`, `aud`,
    /// `iat`, `exp`, `jti`, `provider`, `route`, `decision_id` and, when known, `sub`. Defaults to
    /// `[sub, scope, permissions, org_id, act]`.
    #[serde(default = "default_claims")]
    pub claims: Vec<String>,
    /// Rotation of a generated key. Defaults to none: the key is kept until the state is deleted.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
}

/// `rotation: {every_seconds, publish_ahead_seconds}`: a new key is generated every `every_seconds`,
/// published at once and used for signing `publish_ahead_seconds` later (so verifiers that cache the key
/// set see it first); the old key stays published until the last token it signed has expired.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Required; at least `publish_ahead_seconds + ttl_seconds`.
    pub every_seconds: u64,
    /// Defaults to 300.
    #[serde(default = "default_publish_ahead")]
    pub publish_ahead_seconds: u64,
}

fn default_header() -> String {
    "x-auth-identity".to_owned()
}

fn default_ttl() -> u64 {
    60
}

fn default_algorithm() -> String {
    "ES256".to_owned()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".portcullis-state")
}

fn default_claims() -> Vec<String> {
    ["sub", "scope", "permissions", "org_id", "act"]
        .map(str::to_owned)
        .to_vec()
}

fn default_publish_ahead() -> u64 {
    300
}

/// Checks the section's values.
pub(crate) fn validate(problems: &mut Problems, config: &IdentityTokenConfig) {
    let path = "identity_token";
    if !is_header_name(&config.header) {
        problems.add(format!("{path}.header"), "must be a lower-case header name");
    }
    if ["authorization", "cookie", "host"].contains(&config.header.as_str()) {
        problems.add(
            format!("{path}.header"),
            "must not be a header the request needs",
        );
    }
    for (field, value) in [("issuer", &config.issuer), ("audience", &config.audience)] {
        if value.is_empty() {
            problems.add(format!("{path}.{field}"), "must not be empty");
        }
    }
    if !(1..=86_400).contains(&config.ttl_seconds) {
        problems.add(format!("{path}.ttl_seconds"), "must be between 1 and 86400");
    }
    if config.algorithm != "ES256" {
        problems.add(format!("{path}.algorithm"), "only ES256 is supported");
    }
    for (i, claim) in config.claims.iter().enumerate() {
        if !COPYABLE_CLAIMS.contains(&claim.as_str()) {
            problems.add(
                format!("{path}.claims[{i}]"),
                format!("must be one of {}", COPYABLE_CLAIMS.join(", ")),
            );
        }
    }
    if let Some(rotation) = &config.rotation {
        if config.signing_key.is_some() {
            problems.add(
                format!("{path}.rotation"),
                "rotates a generated key: remove signing_key, or rotate the key file yourself",
            );
        }
        if rotation.every_seconds < rotation.publish_ahead_seconds + config.ttl_seconds {
            problems.add(
                format!("{path}.rotation.every_seconds"),
                "must be at least publish_ahead_seconds + ttl_seconds",
            );
        }
    }
}

/// A route's `identity_token` needs the section, and its audience must not be empty.
pub(crate) fn validate_routes(problems: &mut Problems, policy: &PolicyConfig, configured: bool) {
    let routes = policy
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("routes[{i}].identity_token"), &r.identity_token))
        .chain(std::iter::once((
            "default_route.identity_token".to_owned(),
            &policy.default_route.identity_token,
        )));
    for (path, setting) in routes {
        match setting {
            None | Some(RouteIdentityToken::Enabled(false)) => {}
            Some(_) if !configured => {
                problems.add(path, "needs the top-level identity_token section")
            }
            Some(RouteIdentityToken::Audience(a)) if a.audience.is_empty() => {
                problems.add(format!("{path}.audience"), "must not be empty")
            }
            Some(_) => {}
        }
    }
}
