//! Provider configuration: the keys every provider shares (`name`, `credential`, `claims_mapping`,
//! `deny_message`) and each kind's own keys, with their validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::dpop::DpopConfig;
use super::{Problems, SecretRef, BUILTIN_HEADER_SUFFIXES};
use crate::request::is_header_name;

/// One credential provider. `type` selects the kind; the common keys apply to every kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Names the provider in headers (`x-auth-provider`), routes, logs and metrics.
    pub name: String,
    /// Where the credential is. Defaults to `Authorization: Bearer`.
    pub credential: CredentialLocation,
    /// Claim (or attribute) name → attribute name. A space-separated string becomes several values, an
    /// array stays a list. Attributes are sent upstream as `<prefix><attribute>` headers and feed policy.
    pub claims_mapping: BTreeMap<String, String>,
    /// Shown in the 401 body when this provider could have taken a credential, e.g. "provide a GitHub
    /// token in the Authorization header". Defaults to none.
    pub deny_message: Option<String>,
    /// Several opaque-token providers (`introspection`, `webhook`, `github`, `api_key`) may read one
    /// credential place only when each of them says `shared_location_order: true`: the credential then goes
    /// to them in their declared order, on to the next only when the previous one rejected it. Without it
    /// such a config is refused, so a mistyped API key is never sent to GitHub or a webhook by accident.
    /// Defaults to false.
    pub shared_location_order: bool,
    pub kind: ProviderKind,
}

/// The kinds of provider (`type`).
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    Jwt(JwtProviderConfig),
    Introspection(IntrospectionConfig),
    Webhook(WebhookConfig),
    Github(GithubConfig),
    ApiKey(ApiKeyConfig),
    Mtls(MtlsConfig),
    EnvoyJwt(EnvoyJwtConfig),
    Anonymous(AnonymousConfig),
    Kubernetes(KubernetesConfig),
}

pub const KINDS: &str =
    "jwt, introspection, webhook, github, api_key, mtls, envoy_jwt, anonymous, kubernetes";

// === impl ProviderKind ===

impl ProviderKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderKind::Jwt(_) => "jwt",
            ProviderKind::Introspection(_) => "introspection",
            ProviderKind::Webhook(_) => "webhook",
            ProviderKind::Github(_) => "github",
            ProviderKind::ApiKey(_) => "api_key",
            ProviderKind::Mtls(_) => "mtls",
            ProviderKind::EnvoyJwt(_) => "envoy_jwt",
            ProviderKind::Anonymous(_) => "anonymous",
            ProviderKind::Kubernetes(_) => "kubernetes",
        }
    }

    /// The secret references of this provider, with the name of their field.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            ProviderKind::Jwt(c) => c
                .shared_secret
                .iter()
                .map(|s| ("shared_secret", s))
                .chain(c.jwks.token.iter().map(|t| ("jwks.token", t)))
                .chain(
                    c.dpop
                        .iter()
                        .filter_map(|d| d.nonce_secret.as_ref())
                        .map(|s| ("dpop.nonce_secret", s)),
                )
                .collect(),
            ProviderKind::Introspection(c) => std::iter::once(("client_secret", &c.client_secret))
                .chain(
                    c.dpop
                        .iter()
                        .filter_map(|d| d.nonce_secret.as_ref())
                        .map(|s| ("dpop.nonce_secret", s)),
                )
                .collect(),
            ProviderKind::Kubernetes(c) => vec![("token", &c.token)],
            _ => Vec::new(),
        }
    }

    /// What llama-stack's 401 says for this kind of provider (its `get_auth_error_message`), for
    /// `answers: {body: llama_stack}` when the provider has no `deny_message`.
    pub fn llama_stack_message(&self) -> String {
        const REQUIRED: &str = "Authentication required";
        let host = |url: &str| {
            url::Url::parse(url).ok().and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            })
        };
        match self {
            ProviderKind::Jwt(c) => format!(
                "{REQUIRED}. Please provide a valid OAuth2 Bearer token from {}",
                c.issuer
            ),
            ProviderKind::Introspection(c) => match host(&c.endpoint) {
                Some(host) => format!(
                    "{REQUIRED}. Please provide a valid OAuth2 Bearer token validated by {host}"
                ),
                None => format!(
                    "{REQUIRED}. Please provide a valid OAuth2 Bearer token in the Authorization header"
                ),
            },
            ProviderKind::Webhook(c) => match host(&c.endpoint) {
                Some(host) => format!(
                    "{REQUIRED}. Please provide your API key as a Bearer token (validated by {host})"
                ),
                None => format!(
                    "{REQUIRED}. Please provide your API key as a Bearer token in the Authorization header"
                ),
            },
            ProviderKind::Github(_) => format!(
                "{REQUIRED}. Please provide a valid GitHub access token (https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/managing-your-personal-access-tokens) in the Authorization header (Bearer <token>)"
            ),
            _ => REQUIRED.to_owned(),
        }
    }

    /// The `dpop` block of a kind that takes one (`jwt`, `introspection`), when configured.
    pub fn dpop(&self) -> Option<&DpopConfig> {
        match self {
            ProviderKind::Jwt(c) => c.dpop.as_ref(),
            ProviderKind::Introspection(c) => c.dpop.as_ref(),
            ProviderKind::EnvoyJwt(c) => c.dpop.as_ref(),
            _ => None,
        }
    }

    /// The files the provider reads when it is built (a key set, a CA, API keys), so a reload can tell
    /// whether a provider whose section is unchanged would be built differently.
    pub fn build_files(&self) -> Vec<&std::path::Path> {
        let (tls, own) = match self {
            ProviderKind::Jwt(c) => (Some(&c.tls), c.jwks_file.as_deref()),
            ProviderKind::Introspection(c) => (Some(&c.tls), None),
            ProviderKind::Webhook(c) => (Some(&c.tls), None),
            ProviderKind::Kubernetes(c) => (Some(&c.tls), None),
            ProviderKind::ApiKey(c) => (None, c.keys_file.as_deref()),
            _ => (None, None),
        };
        tls.and_then(|t| t.ca_file.as_deref())
            .into_iter()
            .chain(own)
            .collect()
    }

    /// Whether the kind reads a credential from the request (and so takes `credential`).
    pub fn takes_credential(&self) -> bool {
        !matches!(
            self,
            ProviderKind::Mtls(_) | ProviderKind::EnvoyJwt(_) | ProviderKind::Anonymous(_)
        )
    }
}

/// Where a provider finds its credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialLocation {
    /// A header; with a scheme (`Authorization: Bearer <token>`, case-insensitive) or the raw value.
    Header {
        name: String,
        scheme: Option<String>,
    },
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
}

impl Default for CredentialLocation {
    fn default() -> Self {
        CredentialLocation::Header {
            name: "authorization".to_owned(),
            scheme: Some("Bearer".to_owned()),
        }
    }
}

// === impl CredentialLocation ===

impl CredentialLocation {
    /// The `WWW-Authenticate` scheme a client should use, when the credential goes in `Authorization`.
    pub fn challenge_scheme(&self) -> Option<&str> {
        match self {
            CredentialLocation::Header { name, scheme } if name == "authorization" => {
                scheme.as_deref()
            }
            _ => None,
        }
    }
}

/// The YAML shape of `credential`: one of `header` (with an optional `scheme`), `cookie` or `query`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    header: Option<String>,
    scheme: Option<String>,
    cookie: Option<String>,
    query: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    name: String,
    #[serde(default)]
    credential: Option<RawCredential>,
    #[serde(default)]
    claims_mapping: BTreeMap<String, String>,
    #[serde(default)]
    deny_message: Option<String>,
    #[serde(default)]
    shared_location_order: bool,
}

const COMMON_KEYS: &[&str] = &[
    "name",
    "credential",
    "claims_mapping",
    "deny_message",
    "shared_location_order",
];

/// Parses one entry of `providers`.
pub(super) fn parse(problems: &mut Problems, index: usize, item: Value) -> Option<ProviderConfig> {
    let path = format!("providers[{index}]");
    let Value::Mapping(mut map) = item else {
        problems.add(path, "must be a mapping");
        return None;
    };
    let kind = match map.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            problems.add(format!("{path}.type"), "must be a string");
            return None;
        }
        None => {
            problems.add(
                format!("{path}.type"),
                format!("is required (one of: {KINDS})"),
            );
            return None;
        }
    };
    let mut common = Mapping::new();
    for key in COMMON_KEYS {
        if let Some(v) = map.remove(*key) {
            common.insert(Value::from(*key), v);
        }
    }
    let common = problems.section::<RawCommon>(&path, Value::Mapping(common));
    let rest = Value::Mapping(map);
    let kind = match kind.as_str() {
        "jwt" => problems.section(&path, rest).map(ProviderKind::Jwt),
        "introspection" => problems
            .section(&path, rest)
            .map(ProviderKind::Introspection),
        "webhook" => problems.section(&path, rest).map(ProviderKind::Webhook),
        "github" => problems.section(&path, rest).map(ProviderKind::Github),
        "api_key" => problems.section(&path, rest).map(ProviderKind::ApiKey),
        "mtls" => problems.section(&path, rest).map(ProviderKind::Mtls),
        "envoy_jwt" => problems.section(&path, rest).map(ProviderKind::EnvoyJwt),
        "anonymous" => problems.section(&path, rest).map(ProviderKind::Anonymous),
        "kubernetes" => problems.section(&path, rest).map(ProviderKind::Kubernetes),
        other => {
            problems.add(
                format!("{path}.type"),
                format!("unknown provider type `{other}` (known: {KINDS})"),
            );
            None
        }
    };
    let (common, kind) = (common?, kind?);
    let credential = match common.credential {
        None => CredentialLocation::default(),
        Some(raw) => {
            if !kind.takes_credential() {
                problems.add(
                    format!("{path}.credential"),
                    format!(
                        "a `{}` provider reads no credential from the request",
                        kind.type_name()
                    ),
                );
            }
            credential_location(problems, &format!("{path}.credential"), raw)?
        }
    };
    Some(ProviderConfig {
        name: common.name,
        credential,
        claims_mapping: common.claims_mapping,
        deny_message: common.deny_message,
        shared_location_order: common.shared_location_order,
        kind,
    })
}

fn credential_location(
    problems: &mut Problems,
    path: &str,
    raw: RawCredential,
) -> Option<CredentialLocation> {
    let given = [
        raw.header.is_some(),
        raw.cookie.is_some(),
        raw.query.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        problems.add(path, "set exactly one of `header`, `cookie` or `query`");
        return None;
    }
    if raw.scheme.is_some() && raw.header.is_none() {
        problems.add(
            format!("{path}.scheme"),
            "only a `header` credential has a scheme",
        );
    }
    if let Some(name) = raw.header {
        let name = name.to_ascii_lowercase();
        if !is_header_name(&name) {
            problems.add(
                format!("{path}.header"),
                format!("`{name}` is not a header name"),
            );
        }
        // `Authorization` defaults to Bearer; another header carries the raw credential unless told.
        let scheme = match raw.scheme {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s),
            None if name == "authorization" => Some("Bearer".to_owned()),
            None => None,
        };
        if let Some(s) = &scheme {
            if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.add(
                    format!("{path}.scheme"),
                    "must be a single token, e.g. `Bearer`",
                );
            }
            // RFC 9449: a `DPoP` token is only meaningful with its proof, which the provider's `dpop`
            // settings check; read as a plain scheme it would take unbound tokens without any proof.
            if s.eq_ignore_ascii_case("dpop") {
                problems.add(
                    format!("{path}.scheme"),
                    "`DPoP` is not a credential scheme here: keep `Bearer` and set the provider's `dpop` \
                     (`mode: required` or `allowed`), which reads `Authorization: DPoP` with its proof \
                     (RFC 9449)",
                );
            }
        }
        return Some(CredentialLocation::Header { name, scheme });
    }
    if let Some(cookie) = raw.cookie {
        if cookie.is_empty() || cookie.bytes().any(|b| b <= b' ' || b"=;,\"".contains(&b)) {
            problems.add(format!("{path}.cookie"), "is not a cookie name");
        }
        return Some(CredentialLocation::Cookie(cookie));
    }
    let query = raw.query.unwrap_or_default();
    if query.is_empty() {
        problems.add(format!("{path}.query"), "must not be empty");
    }
    Some(CredentialLocation::Query(query))
}

/// A JWT signature algorithm a provider may accept (RFC 7518 §3.1, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum AlgorithmName {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

// === impl AlgorithmName ===

impl AlgorithmName {
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            AlgorithmName::HS256 | AlgorithmName::HS384 | AlgorithmName::HS512
        )
    }
}

/// `type: jwt`: bearer JWTs from one issuer (RFC 7519, RFC 8725, RFC 9068).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// Compared exactly with the token's `iss` (RFC 7519 §4.1.1); also picks this provider among several.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these (RFC 7519 §4.1.3). Required: a token minted for
    /// another API of the same issuer must not pass.
    pub audiences: Vec<String>,
    /// Where the keys are. When absent, OIDC discovery at `{issuer}/.well-known/openid-configuration` finds it.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A local JWKS file read once at start instead of fetching one (air-gapped setups, pinned keys).
    /// Excludes `jwks_uri` and `shared_secret`. Defaults to none.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The algorithms accepted; each key's own `kty`/`crv`/`alg` narrows this further. Defaults to `[RS256]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<AlgorithmName>,
    /// The HMAC key for HS256/384/512. Only with this set may an HS algorithm be listed; a JWKS is never
    /// used for HMAC.
    #[serde(default)]
    pub shared_secret: Option<SecretRef>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Defaults to 30; at most 300.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Tokens longer than this are refused before any parsing. Defaults to 8192.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// When set, the token header's `typ` must equal it (case-insensitive, `application/` prefix allowed),
    /// e.g. `at+jwt` for RFC 9068 access tokens, so an ID token cannot be replayed as an access token.
    /// Defaults to no check.
    #[serde(default)]
    pub required_typ: Option<String>,
    /// Claim name → header name, sent upstream on an allow. Strings, numbers and booleans are sent as they
    /// are; arrays are joined with `,`. Header names must start with the identity header prefix.
    #[serde(default)]
    pub claim_headers: BTreeMap<String, String>,
    /// Key set fetching.
    #[serde(default)]
    pub jwks: JwksSettings,
    /// TLS for the discovery and key set fetches. Defaults to the platform's roots.
    #[serde(default)]
    pub tls: TlsSettings,
    /// The verified-token cache.
    #[serde(default)]
    pub cache: TokenCacheSettings,
    /// Allow `http://` URLs for the issuer's discovery document and key set on hosts other than loopback.
    /// Keys fetched over plain HTTP can be replaced by anyone on the path. Defaults to false.
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
    /// DPoP (RFC 9449): sender-constrained tokens. Defaults to `mode: optional` with the default settings
    /// (a token bound with `cnf.jkt` needs its proof; the scheme is not advertised in challenges).
    #[serde(default)]
    pub dpop: Option<DpopConfig>,
    /// A `sub` ending in this marks a client-credentials (machine) token, and what comes before it is the
    /// client id, as Auth0 does with `<client id>@clients`. Defaults to `@clients` for an Auth0 issuer
    /// (`https://…auth0.com/`) and to no such rule for any other issuer; `""` turns it off. Set it for an
    /// Auth0 custom domain. Tokens with `gty: client-credentials`, no `sub`, or a `sub` equal to
    /// `client_id`/`azp` are machine tokens whatever this says.
    #[serde(default)]
    pub machine_subject_suffix: Option<String>,
}

fn default_algorithms() -> Vec<AlgorithmName> {
    vec![AlgorithmName::RS256]
}
fn default_leeway() -> u64 {
    30
}
fn default_max_token_bytes() -> usize {
    8192
}

/// How a provider's key set is fetched and refreshed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksSettings {
    /// Refresh interval when the response has no `Cache-Control: max-age`. Defaults to 300.
    pub refresh_seconds: u64,
    /// Lower bound on a `max-age` the IdP asks for. Defaults to 60.
    pub min_refresh_seconds: u64,
    /// Upper bound on a `max-age` the IdP asks for. Defaults to 3600.
    pub max_refresh_seconds: u64,
    /// A token with an unknown `kid` triggers at most one refresh per this many seconds. Defaults to 30.
    pub unknown_kid_cooldown_seconds: u64,
    /// Timeout of one discovery or key set request. Defaults to 5.
    pub timeout_seconds: u64,
    /// Larger responses are refused. Defaults to 1048576 (1 MiB).
    pub max_response_bytes: usize,
    /// A bearer token sent with the key set fetch (only to `jwks_uri`, which it requires), e.g. the pod's
    /// service-account token for a Kubernetes API server's issuer:
    /// `{file: /var/run/secrets/kubernetes.io/serviceaccount/token}`. A file is read again at every fetch,
    /// so a rotated token is picked up. Defaults to none.
    pub token: Option<SecretRef>,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            refresh_seconds: 300,
            min_refresh_seconds: 60,
            max_refresh_seconds: 3600,
            unknown_kid_cooldown_seconds: 30,
            timeout_seconds: 5,
            max_response_bytes: 1 << 20,
            token: None,
        }
    }
}

/// The cache of tokens already verified, keyed by a SHA-256 digest of the token (never the token itself).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenCacheSettings {
    /// Entries at most; 0 disables the cache. Defaults to 10000.
    pub max_entries: u64,
    /// An entry lives at most this long, and never past the token's `exp`. Defaults to 300.
    pub max_ttl_seconds: u64,
}

impl Default for TokenCacheSettings {
    fn default() -> Self {
        TokenCacheSettings {
            max_entries: 10_000,
            max_ttl_seconds: 300,
        }
    }
}

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

/// HTTP settings shared by the providers that call an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Timeout of one upstream call; a timeout is "unavailable", never an allow. Defaults to 5.
    pub timeout_seconds: u64,
    /// Larger response bodies are refused (and count as unavailable). Defaults to 65536.
    pub max_response_bytes: usize,
    /// Cached results at most. Defaults to 10000.
    pub cache_max_entries: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            timeout_seconds: 5,
            max_response_bytes: 64 * 1024,
            cache_max_entries: 10_000,
        }
    }
}

/// TLS for a provider's upstream calls (`tls`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// A PEM file of CA certificates: the upstream's certificate must chain to one of them (and only to
    /// them: the platform's roots are not used). Read at start. Defaults to the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// DANGEROUS: accept any certificate, so anyone on the path can impersonate the upstream (serve keys,
    /// answer introspection, read the tokens and secrets sent). For a test cluster only; `validate-config`
    /// warns. Defaults to false.
    pub insecure_skip_verify: bool,
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
fn default_max_ttl() -> u64 {
    300
}
fn default_negative_ttl() -> u64 {
    10
}

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

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The SHA-256 of the key, as `portcullis hash-key` prints it (64 hex digits, `sha256:` prefix allowed).
    pub sha256: String,
    /// The principal the key authenticates (`x-auth-subject`).
    pub principal: String,
    /// Attributes, e.g. `scopes: [read:data]`. A string value is split on spaces.
    #[serde(default)]
    pub attributes: BTreeMap<String, StringOrList>,
    /// Defaults to `machine`.
    #[serde(default = "default_machine")]
    pub kind: KindName,
}

fn default_machine() -> KindName {
    KindName::Machine
}

/// `human` or `machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    Human,
    Machine,
}

/// A string (split on spaces) or a list of strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

// === impl StringOrList ===

impl StringOrList {
    pub fn values(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// `type: api_key`: static keys, stored only as SHA-256 digests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Keys in the configuration.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A YAML or JSON file holding a list of keys in the same shape; re-read when it changes.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// How often `keys_file` is checked for changes. Defaults to 10.
    #[serde(default = "default_reload")]
    pub reload_seconds: u64,
}

fn default_reload() -> u64 {
    10
}

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

/// `type: anonymous`: an explicit identity for requests that carry no credential at all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// The principal (`x-auth-subject`). Defaults to `anonymous`.
    #[serde(default = "default_anonymous")]
    pub principal: String,
}

fn default_anonymous() -> String {
    "anonymous".to_owned()
}

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

/// Checks one provider's settings.
pub(super) fn validate(
    problems: &mut Problems,
    path: &str,
    provider: &ProviderConfig,
    prefix: Option<&str>,
) {
    if provider.name.is_empty()
        || !provider
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        problems.add(
            format!("{path}.name"),
            "must be non-empty and use only letters, digits, `-`, `_` and `.`",
        );
    }
    for (claim, attribute) in &provider.claims_mapping {
        let field = format!("{path}.claims_mapping.{claim}");
        let header = format!("{}{attribute}", prefix.unwrap_or(""));
        if attribute.is_empty() || !is_header_name(attribute) {
            problems.add(
                &field,
                format!("`{attribute}` must be a lower-case name usable in a header"),
            );
        } else if BUILTIN_HEADER_SUFFIXES.contains(&attribute.as_str()) {
            problems.add(&field, format!("`{header}` is set by portcullis itself"));
        }
    }
    if let Some(message) = &provider.deny_message {
        if message.is_empty() || message.chars().any(char::is_control) {
            problems.add(format!("{path}.deny_message"), "must be one non-empty line");
        }
    }
    if let Some(dpop) = provider.kind.dpop() {
        dpop.validate(problems, &format!("{path}.dpop"));
    }
    match &provider.kind {
        ProviderKind::Jwt(jwt) => validate_jwt(problems, path, jwt, prefix),
        ProviderKind::Introspection(c) => {
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
        ProviderKind::Webhook(c) => {
            validate_http_upstream(
                problems,
                path,
                ("endpoint", &c.endpoint),
                c.dangerous_allow_plain_http,
                &c.upstream,
            );
            validate_tls(problems, path, &c.tls);
        }
        ProviderKind::Kubernetes(c) => {
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
        ProviderKind::Github(c) => {
            validate_http_upstream(
                problems,
                path,
                ("api_base", &c.api_base),
                c.dangerous_allow_plain_http,
                &c.upstream,
            );
        }
        ProviderKind::ApiKey(c) => {
            if c.keys.is_empty() && c.keys_file.is_none() {
                problems.add(path, "an api_key provider needs `keys` or `keys_file`");
            }
            for (i, key) in c.keys.iter().enumerate() {
                validate_api_key(problems, &format!("{path}.keys[{i}]"), key);
            }
            if c.reload_seconds == 0 {
                problems.add(format!("{path}.reload_seconds"), "must be at least 1");
            }
        }
        ProviderKind::Mtls(c) => {
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
        ProviderKind::EnvoyJwt(c) => {
            if c.metadata_namespace.is_empty() {
                problems.add(format!("{path}.metadata_namespace"), "must not be empty");
            }
            if c.payload_key.is_empty() {
                problems.add(format!("{path}.payload_key"), "must not be empty");
            }
        }
        ProviderKind::Anonymous(c) => {
            if c.principal.is_empty() || c.principal.chars().any(char::is_control) {
                problems.add(format!("{path}.principal"), "must be one non-empty line");
            }
        }
    }
}

/// Checks one API key entry.
fn validate_api_key(problems: &mut Problems, path: &str, key: &ApiKeyEntry) {
    if parse_digest(&key.sha256).is_none() {
        problems.add(
            format!("{path}.sha256"),
            "must be 64 hex digits (`portcullis hash-key` prints it); never the key itself",
        );
    }
    if key.principal.is_empty() || key.principal.chars().any(char::is_control) {
        problems.add(format!("{path}.principal"), "must be one non-empty line");
    }
}

fn validate_tls(problems: &mut Problems, path: &str, tls: &TlsSettings) {
    if tls.insecure_skip_verify && tls.ca_file.is_some() {
        problems.add(
            format!("{path}.tls"),
            "set either ca_file or insecure_skip_verify, not both",
        );
    }
    if tls
        .ca_file
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty())
    {
        problems.add(format!("{path}.tls.ca_file"), "must not be empty");
    }
}

/// Settings that are valid but dangerous, each at its field path: `validate-config` and `serve` warn.
pub fn warnings(providers: &[ProviderConfig]) -> Vec<super::Problem> {
    let mut found = Vec::new();
    for (i, provider) in providers.iter().enumerate() {
        let tls = match &provider.kind {
            ProviderKind::Jwt(c) => &c.tls,
            ProviderKind::Introspection(c) => &c.tls,
            ProviderKind::Webhook(c) => &c.tls,
            ProviderKind::Kubernetes(c) => &c.tls,
            _ => continue,
        };
        if tls.insecure_skip_verify {
            found.push(super::Problem {
                path: format!("providers[{i}].tls.insecure_skip_verify"),
                message: "DANGEROUS: the upstream's certificate is not verified; anyone on the path can impersonate it and read what is sent. Use tls.ca_file instead".to_owned(),
            });
        }
    }
    found
}

fn validate_upstream(problems: &mut Problems, path: &str, u: &UpstreamSettings) {
    if u.timeout_seconds == 0 || u.timeout_seconds > 60 {
        problems.add(
            format!("{path}.upstream.timeout_seconds"),
            "must be between 1 and 60",
        );
    }
    if u.max_response_bytes < 1024 {
        problems.add(
            format!("{path}.upstream.max_response_bytes"),
            "must be at least 1024",
        );
    }
}

fn validate_jwt(
    problems: &mut Problems,
    path: &str,
    jwt: &JwtProviderConfig,
    prefix: Option<&str>,
) {
    if jwt.issuer.is_empty() {
        problems.add(format!("{path}.issuer"), "must not be empty");
    }
    if jwt.audiences.is_empty() {
        problems.add(format!("{path}.audiences"), "must not be empty");
    }
    for (i, aud) in jwt.audiences.iter().enumerate() {
        if aud.is_empty() {
            problems.add(format!("{path}.audiences[{i}]"), "must not be empty");
        }
    }
    if jwt.algorithms.is_empty() {
        problems.add(format!("{path}.algorithms"), "must not be empty");
    }
    let hmac = jwt.algorithms.iter().filter(|a| a.is_hmac()).count();
    match &jwt.shared_secret {
        Some(_) => {
            if hmac != jwt.algorithms.len() {
                problems.add(
                    format!("{path}.algorithms"),
                    "with shared_secret, only HS256, HS384 and HS512 may be listed",
                );
            }
            if jwt.jwks_uri.is_some() || jwt.jwks_file.is_some() {
                problems.add(
                    format!("{path}.shared_secret"),
                    "a provider with shared_secret verifies with that secret only: remove jwks_uri/jwks_file",
                );
            }
        }
        None => {
            if hmac > 0 {
                problems.add(
                    format!("{path}.algorithms"),
                    "HS256/384/512 need an explicit shared_secret; they are never accepted against a JWKS",
                );
            }
            let insecure = jwt.dangerous_allow_plain_http;
            match (&jwt.jwks_uri, &jwt.jwks_file) {
                (Some(_), Some(_)) => problems.add(
                    format!("{path}.jwks_file"),
                    "set either jwks_uri or jwks_file, not both",
                ),
                (None, Some(_)) => {}
                (Some(uri), None) => {
                    check_url(problems, &format!("{path}.jwks_uri"), uri, insecure)
                }
                (None, None) => {
                    check_url(problems, &format!("{path}.issuer"), &jwt.issuer, insecure)
                }
            }
        }
    }
    if jwt.leeway_seconds > 300 {
        problems.add(
            format!("{path}.leeway_seconds"),
            "must be at most 300 (a long leeway keeps expired tokens alive)",
        );
    }
    if !(512..=65536).contains(&jwt.max_token_bytes) {
        problems.add(
            format!("{path}.max_token_bytes"),
            "must be between 512 and 65536",
        );
    }
    if let Some(typ) = &jwt.required_typ {
        if typ.trim().is_empty() {
            problems.add(format!("{path}.required_typ"), "must not be empty when set");
        }
    }
    for (claim, header) in &jwt.claim_headers {
        let field = format!("{path}.claim_headers.{claim}");
        if claim.is_empty() {
            problems.add(&field, "claim name must not be empty");
        }
        if !is_header_name(header) {
            problems.add(
                &field,
                format!("`{header}` is not a lower-case header name"),
            );
            continue;
        }
        if let Some(prefix) = prefix {
            match header.strip_prefix(prefix) {
                None => problems.add(
                    &field,
                    format!(
                        "`{header}` must start with the identity header prefix `{prefix}`, so a client-sent copy is always stripped"
                    ),
                ),
                Some(suffix) if BUILTIN_HEADER_SUFFIXES.contains(&suffix) => {
                    problems.add(&field, format!("`{header}` is set by portcullis itself"))
                }
                Some(_) => {}
            }
        }
    }
    validate_tls(problems, path, &jwt.tls);
    let j = &jwt.jwks;
    if j.token.is_some() && jwt.jwks_uri.is_none() {
        problems.add(
            format!("{path}.jwks.token"),
            "needs jwks_uri: the token is sent only to a configured key set URL, never to a discovered one",
        );
    }
    if j.min_refresh_seconds == 0 {
        problems.add(
            format!("{path}.jwks.min_refresh_seconds"),
            "must be at least 1",
        );
    }
    if j.min_refresh_seconds > j.max_refresh_seconds {
        problems.add(
            format!("{path}.jwks.min_refresh_seconds"),
            "must not exceed jwks.max_refresh_seconds",
        );
    }
    if j.refresh_seconds < j.min_refresh_seconds || j.refresh_seconds > j.max_refresh_seconds {
        problems.add(
            format!("{path}.jwks.refresh_seconds"),
            "must lie between jwks.min_refresh_seconds and jwks.max_refresh_seconds",
        );
    }
    if j.timeout_seconds == 0 || j.timeout_seconds > 60 {
        problems.add(
            format!("{path}.jwks.timeout_seconds"),
            "must be between 1 and 60",
        );
    }
    if j.max_response_bytes < 1024 {
        problems.add(
            format!("{path}.jwks.max_response_bytes"),
            "must be at least 1024",
        );
    }
}

/// An opaque-token upstream: its URL (`field`, value) and its call settings.
fn validate_http_upstream(
    problems: &mut Problems,
    path: &str,
    (field, url): (&str, &str),
    allow_plain_http: bool,
    upstream: &UpstreamSettings,
) {
    check_url(problems, &format!("{path}.{field}"), url, allow_plain_http);
    validate_upstream(problems, path, upstream);
}

/// An `http(s)` URL portcullis calls; plain HTTP only to loopback unless the provider opts in.
fn check_url(problems: &mut Problems, field: &str, url: &str, allow_plain_http: bool) {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            problems.add(field, format!("not a URL ({e})"));
            return;
        }
    };
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback && !allow_plain_http {
                problems.add(
                    field,
                    "plain http is only allowed to loopback; use https (or set dangerous_allow_plain_http: true)",
                );
            }
        }
        other => problems.add(
            field,
            format!("scheme `{other}` is not supported; use https"),
        ),
    }
    if parsed.host().is_none() {
        problems.add(field, "has no host");
    }
}

/// Parses `sha256:<64 hex>` or `<64 hex>`.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(providers: &str) -> Vec<String> {
        Config::from_yaml_str(&format!("providers:\n{providers}"))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn each_kind_checks_its_settings() {
        let found = problems(
            "  - {name: i, type: introspection, endpoint: 'http://idp.example/introspect', client_id: '', client_secret: {env: X}, shared_location_order: true}
  - {name: w, type: webhook, endpoint: 'ftp://x/', upstream: {timeout_seconds: 0}, shared_location_order: true}
  - {name: k, type: api_key, keys: [{sha256: 'not-hex', principal: ci}], shared_location_order: true}
  - {name: e, type: api_key, shared_location_order: true}
  - {name: m, type: mtls, trust_domains: ['spiffe://cluster.local']}
  - {name: c, type: api_key, credential: {header: x-key, cookie: k}, keys_file: /k}
  - {name: t, type: mtls, credential: {header: x-key}}
  - {name: g, type: github, api_base: 'https://api.github.com', claims_mapping: {login: subject}, shared_location_order: true}",
        );
        let has = |needle: &str| found.iter().any(|p| p.starts_with(needle));
        assert!(
            has("providers[0].endpoint: plain http is only allowed to loopback"),
            "{found:?}"
        );
        assert!(
            has("providers[0].client_id: must not be empty"),
            "{found:?}"
        );
        assert!(
            has("providers[1].endpoint: scheme `ftp` is not supported"),
            "{found:?}"
        );
        assert!(
            has("providers[1].upstream.timeout_seconds: must be between 1 and 60"),
            "{found:?}"
        );
        assert!(
            has("providers[2].keys[0].sha256: must be 64 hex digits"),
            "{found:?}"
        );
        assert!(
            has("providers[3]: an api_key provider needs `keys` or `keys_file`"),
            "{found:?}"
        );
        assert!(
            has("providers[4].trust_domains[0]: must be a bare trust domain"),
            "{found:?}"
        );
        assert!(
            has("providers[5].credential: set exactly one of"),
            "{found:?}"
        );
        assert!(
            has("providers[6].credential: a `mtls` provider reads no credential"),
            "{found:?}"
        );
        assert!(
            has("providers[7].claims_mapping.login: `x-auth-subject` is set by portcullis itself"),
            "{found:?}"
        );
        assert_eq!(found.len(), 10, "{found:?}");
    }

    #[test]
    fn the_dpop_scheme_is_not_a_plain_credential_scheme() {
        for scheme in ["DPoP", "dpop"] {
            let errors = Config::from_yaml_str(&format!(
                "providers:\n  - {{name: a, type: jwt, issuer: 'https://i.example/', audiences: [x], credential: {{header: authorization, scheme: {scheme}}}}}"
            ))
            .unwrap_err()
            .0;
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].path, "providers[0].credential.scheme");
            assert!(errors[0].message.contains("RFC 9449"), "{errors:?}");
        }
    }

    #[test]
    fn credential_locations_parse() {
        use super::CredentialLocation;
        let config = Config::from_yaml_str(
            "providers:
  - {name: a, type: api_key, keys_file: /k, credential: {header: X-Api-Key}}
  - {name: b, type: api_key, keys_file: /k, credential: {header: authorization, scheme: token}}
  - {name: c, type: api_key, keys_file: /k, credential: {query: api_key}}",
        )
        .unwrap();
        assert_eq!(
            config.providers[0].credential,
            CredentialLocation::Header {
                name: "x-api-key".into(),
                scheme: None
            }
        );
        assert_eq!(
            config.providers[1].credential.challenge_scheme(),
            Some("token")
        );
        assert_eq!(
            config.providers[2].credential,
            CredentialLocation::Query("api_key".into())
        );
    }
}
