//! `type: envoy_jwt`: a JWT payload Envoy's `jwt_authn` filter already verified.

use serde::Deserialize;

use super::Problems;
use crate::config::dpop::DpopConfig;

/// `type: envoy_jwt`: a JWT payload Envoy's `jwt_authn` filter already verified, read from the request's
/// metadata. No second signature check: only use behind a `jwt_authn` filter that requires the token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyJwtConfig {
    /// The filter metadata namespace. Defaults to `envoy.filters.http.jwt_authn`; Envoy's ext_authz must
    /// list it in `metadata_context_namespaces`.
    #[serde(default = "default_jwt_authn_namespace")]
    pub metadata_namespace: String,
    /// The key the payload is stored under (`payload_in_metadata` in jwt_authn). Defaults to `jwt_payload`.
    #[serde(default = "default_payload_key")]
    pub payload_key: String,
    /// When set, the payload's `iss` must be one of these. Defaults to any.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// A `sub` ending in this marks a client-credentials (machine) token, and what comes before it is the
    /// client id, as Auth0 does with `<client id>@clients`. Defaults to `@clients` for a payload whose `iss` is an Auth0 issuer
    /// (`https://…auth0.com/`) and to no such rule for any other issuer; `""` turns it off. Set it for an
    /// Auth0 custom domain. Tokens with `gty: client-credentials`, no `sub`, or a `sub` equal to
    /// `client_id`/`azp` are machine tokens whatever this says.
    #[serde(default)]
    pub machine_subject_suffix: Option<String>,
    /// DPoP (RFC 9449) for tokens `jwt_authn` verified, with the same rules as a `jwt` provider's: a token
    /// bound to a key (`cnf.jkt`) is only accepted with a valid proof (`Authorization: DPoP`, or Bearer
    /// when `jwt_authn` reads that, with the `DPoP` header; `jwt_authn` must forward the token,
    /// `forward: true`, for the proof's `ath` to be checked). Defaults to `mode: optional`.
    #[serde(default)]
    pub dpop: Option<DpopConfig>,
}

fn default_jwt_authn_namespace() -> String {
    "envoy.filters.http.jwt_authn".to_owned()
}
fn default_payload_key() -> String {
    "jwt_payload".to_owned()
}

/// Checks an `envoy_jwt` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &EnvoyJwtConfig) {
    if c.metadata_namespace.is_empty() {
        problems.add(format!("{path}.metadata_namespace"), "must not be empty");
    }
    if c.payload_key.is_empty() {
        problems.add(format!("{path}.payload_key"), "must not be empty");
    }
}
