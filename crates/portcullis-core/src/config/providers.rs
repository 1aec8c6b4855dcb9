//! Provider configuration: the keys every provider shares (`name`, `credential`, `claims_mapping`,
//! `deny_message`) and their validation; each kind's own keys, defaults and checks are in `providers/<kind>.rs`
//! (as the providers themselves are in `src/providers/`).

mod anonymous;
mod api_key;
mod envoy_jwt;
mod github;
mod introspection;
mod jwt;
mod kubernetes;
mod mtls;
mod webhook;

pub use self::anonymous::AnonymousConfig;
pub use self::api_key::{parse_digest, ApiKeyConfig, ApiKeyEntry, KindName};
pub use self::envoy_jwt::EnvoyJwtConfig;
pub use self::github::GithubConfig;
pub use self::introspection::{ClientAuthMethod, IntrospectionConfig};
pub use self::jwt::{AlgorithmName, JwksSettings, JwtProviderConfig, TokenCacheSettings};
pub use self::kubernetes::KubernetesConfig;
pub use self::mtls::MtlsConfig;
pub use self::webhook::WebhookConfig;

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

/// The longest a cached upstream answer is kept (`max_ttl_seconds` of the providers that cache answers).
fn default_max_ttl() -> u64 {
    300
}

/// How long a negative upstream answer is cached (`negative_ttl_seconds`).
fn default_negative_ttl() -> u64 {
    10
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
        ProviderKind::Jwt(jwt) => jwt::validate(problems, path, jwt, prefix),
        ProviderKind::Introspection(c) => introspection::validate(problems, path, c),
        ProviderKind::Webhook(c) => webhook::validate(problems, path, c),
        ProviderKind::Kubernetes(c) => kubernetes::validate(problems, path, c),
        ProviderKind::Github(c) => github::validate(problems, path, c),
        ProviderKind::ApiKey(c) => api_key::validate(problems, path, c),
        ProviderKind::Mtls(c) => mtls::validate(problems, path, c),
        ProviderKind::EnvoyJwt(c) => envoy_jwt::validate(problems, path, c),
        ProviderKind::Anonymous(c) => anonymous::validate(problems, path, c),
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
    let parsed = match url::Url::parse(url) {
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
