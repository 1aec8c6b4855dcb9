//! `type: jwt`: bearer JWTs from one issuer: the algorithms, the key set (fetched, a file, or a shared
//! secret), the token cache, and their validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{check_url, validate_tls, Problems, SecretRef, TlsSettings, BUILTIN_HEADER_SUFFIXES};
use crate::config::dpop::DpopConfig;
use crate::request::is_header_name;

/// A JWT signature algorithm a provider may accept (RFC 7518 §3.1, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
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
    /// The jsonwebtoken algorithm of this name (the one mapping: key sets and DPoP proofs both use it).
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm;
        match self {
            AlgorithmName::RS256 => Algorithm::RS256,
            AlgorithmName::RS384 => Algorithm::RS384,
            AlgorithmName::RS512 => Algorithm::RS512,
            AlgorithmName::PS256 => Algorithm::PS256,
            AlgorithmName::PS384 => Algorithm::PS384,
            AlgorithmName::PS512 => Algorithm::PS512,
            AlgorithmName::ES256 => Algorithm::ES256,
            AlgorithmName::ES384 => Algorithm::ES384,
            AlgorithmName::EdDSA => Algorithm::EdDSA,
            AlgorithmName::HS256 => Algorithm::HS256,
            AlgorithmName::HS384 => Algorithm::HS384,
            AlgorithmName::HS512 => Algorithm::HS512,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
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

/// Checks a `jwt` provider's settings.
pub(super) fn validate(
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
