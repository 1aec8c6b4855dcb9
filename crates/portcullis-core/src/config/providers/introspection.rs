//! `type: introspection`: opaque tokens checked with OAuth2 token introspection (RFC 7662).

use serde::Deserialize;

use super::{
    default_max_ttl, default_negative_ttl, validate_http_upstream, validate_tls, Problems,
    SecretRef, TlsSettings, UpstreamSettings,
};
use crate::config::dpop::DpopConfig;

/// How portcullis authenticates itself to an introspection endpoint (RFC 7662 §2.1, RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the client id and secret. The default.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// `type: introspection`: opaque tokens checked with OAuth2 token introspection (RFC 7662).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint.
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    /// Defaults to `client_secret_basic`.
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// Sent as `token_type_hint` (RFC 7662 §2.1). Defaults to `access_token`; empty sends none.
    #[serde(default = "default_hint")]
    pub token_type_hint: String,
    /// An active result is cached until min(`exp`, now + this). Defaults to 300.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    /// An inactive result is cached this long, so a replayed dead token does not hammer the endpoint.
    /// Defaults to 10; 0 disables.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_seconds: u64,
    /// When set, an active token must name one of these in `aud`. Defaults to no check.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Also take JWT-shaped tokens (IdPs such as Keycloak or Okta issue JWT access tokens and introspect
    /// them): a JWT whose `iss` no `jwt` provider of the route owns comes here. Defaults to false.
    #[serde(default)]
    pub accept_jwt: bool,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// TLS for the introspection calls. Defaults to the platform's roots.
    #[serde(default)]
    pub tls: TlsSettings,
    /// Allow a plain `http://` endpoint on a host other than loopback: the token and the client secret
    /// cross the network in clear. Defaults to false.
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
    /// DPoP (RFC 9449) for introspected tokens, bound by the answer's `cnf.jkt`. Defaults as for `jwt`.
    #[serde(default)]
    pub dpop: Option<DpopConfig>,
    /// A `sub` ending in this marks a client-credentials (machine) token, and what comes before it is the
    /// client id, as Auth0 does with `<client id>@clients`. Defaults to `@clients` for an answer whose `iss` is an Auth0 issuer
    /// (`https://…auth0.com/`) and to no such rule for any other issuer; `""` turns it off. Set it for an
    /// Auth0 custom domain. Tokens with `gty: client-credentials`, no `sub`, or a `sub` equal to
    /// `client_id`/`azp` are machine tokens whatever this says.
    #[serde(default)]
    pub machine_subject_suffix: Option<String>,
}

fn default_hint() -> String {
    "access_token".to_owned()
}

/// Checks an `introspection` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &IntrospectionConfig) {
    validate_http_upstream(
        problems,
        path,
        ("endpoint", &c.endpoint),
        c.dangerous_allow_plain_http,
        &c.upstream,
    );
    if c.client_id.is_empty() {
        problems.add(format!("{path}.client_id"), "must not be empty");
    }
    if c.max_ttl_seconds == 0 {
        problems.add(format!("{path}.max_ttl_seconds"), "must be at least 1");
    }
    validate_tls(problems, path, &c.tls);
}
