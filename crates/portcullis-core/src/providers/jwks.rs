//! Key sets: fetching a JWKS (directly or through OIDC discovery) through the host's [`HttpClient`],
//! refreshing on the schedule a host's runner keeps ([`KeyStore::refresh`]), and refreshing on demand,
//! once per cooldown, when a token names a `kid` we do not know.
//!
//! The request path reads the current [`KeySet`] through an `ArcSwap` snapshot and never waits on a lock,
//! except a request with an unknown `kid`, which joins the single on-demand refresh. When a refresh fails the
//! last good keys stay in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

use super::http::{BearerToken, HttpClient, HttpRequest, Method, UpstreamError};
use crate::config::{AlgorithmName, JwksSettings};
use crate::recorder::{Recorder, UpstreamCalls};

/// A set of algorithms, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
];

fn bit(alg: Algorithm) -> u16 {
    let index = ALGORITHMS
        .iter()
        .position(|a| *a == alg)
        .expect("every supported algorithm is listed");
    1 << index
}

// === impl AlgSet ===

impl AlgSet {
    pub const RSA: AlgSet = AlgSet(0b11_1111);
    /// Every public-key algorithm: RSA, RSA-PSS, ECDSA and EdDSA.
    pub const PUBLIC_KEY: AlgSet = AlgSet(0b1_1111_1111);
    pub const HMAC: AlgSet = AlgSet(0b1110_0000_0000);

    pub fn of(algs: impl IntoIterator<Item = Algorithm>) -> AlgSet {
        AlgSet(algs.into_iter().fold(0, |acc, a| acc | bit(a)))
    }

    pub fn from_config(names: &[AlgorithmName]) -> AlgSet {
        AlgSet::of(names.iter().map(|n| n.algorithm()))
    }

    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & bit(alg) != 0
    }

    pub fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A verification key and the algorithms it may be used with (decided by the key, never by a token).
pub struct Key {
    pub kid: Option<Box<str>>,
    decoding: DecodingKey,
    pub algorithms: AlgSet,
    /// The public key parsed once per algorithm it may verify (aws-lc-rs), so a verification does not
    /// parse it again; HMAC secrets have none and go through `decoding`. Empty in the pure-Rust build.
    parsed: parsed::Parsed,
}

// === impl Key ===

impl Key {
    fn new(kid: Option<Box<str>>, decoding: DecodingKey, algorithms: AlgSet) -> Key {
        let parsed = parsed::parse_all(&decoding, |alg| algorithms.contains(alg));
        Key {
            kid,
            decoding,
            algorithms,
            parsed,
        }
    }

    /// Whether `signature` (base64url, RFC 7515 §7.1) signs `message` under `alg`. The caller has checked
    /// that `alg` is one of the key's own [`Key::algorithms`].
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        if !self.algorithms.contains(alg) {
            return false;
        }
        match parsed::verify(&self.parsed, alg, message, signature) {
            Some(valid) => valid,
            None => matches!(
                jsonwebtoken::crypto::verify(signature, message, &self.decoding, alg),
                Ok(true)
            ),
        }
    }
}

/// Public keys parsed once (aws-lc-rs).
#[cfg(feature = "aws-lc-rs")]
mod parsed {
    use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

    pub type Parsed = Box<[(Algorithm, ParsedPublicKey)]>;

    pub fn parse_all(decoding: &DecodingKey, allowed: impl Fn(Algorithm) -> bool) -> Parsed {
        super::ALGORITHMS
            .iter()
            .filter(|&&alg| allowed(alg))
            .filter_map(|&alg| Some((alg, parse_public_key(decoding, alg)?)))
            .collect()
    }

    /// `None` when the key has no parsed form for `alg` (a secret): the caller verifies with jsonwebtoken.
    pub fn verify(
        parsed: &Parsed,
        alg: Algorithm,
        message: &[u8],
        signature: &str,
    ) -> Option<bool> {
        let (_, key) = parsed.iter().find(|(a, _)| *a == alg)?;
        // The largest signature we verify is RSA-8192's 1024 bytes; anything longer is not one.
        let mut buf = [0u8; 1040];
        Some(match URL_SAFE_NO_PAD.decode_slice(signature, &mut buf) {
            Ok(len) => key.verify_sig(message, &buf[..len]).is_ok(),
            Err(_) => false,
        })
    }

    /// The aws-lc-rs verification algorithm of a JWS `alg` (RFC 7518 §3.1), for the public-key ones.
    fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
        if let Some(rsa) = rsa_parameters(alg) {
            return Some(rsa);
        }
        Some(match alg {
            Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA => &signature::ED25519,
            _ => return None,
        })
    }

    /// The RSA parameters of an RSA `alg`, for keys given as modulus and exponent.
    fn rsa_parameters(alg: Algorithm) -> Option<&'static signature::RsaParameters> {
        Some(match alg {
            Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    /// The key parsed for one algorithm; `None` for a secret, or a key aws-lc-rs refuses (such a key then
    /// verifies nothing: `Key::verify` falls back to `decoding`, which refuses it the same way).
    fn parse_public_key(decoding: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
        match decoding.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                let components = signature::RsaPublicKeyComponents { n, e };
                components.to_parsed_public_key(rsa_parameters(alg)?).ok()
            }
            DecodingKeyKind::SecretOrDer(bytes) => {
                ParsedPublicKey::new(verification_algorithm(alg)?, bytes).ok()
            }
        }
    }
}

/// The pure-Rust build verifies every signature through jsonwebtoken.
#[cfg(not(feature = "aws-lc-rs"))]
mod parsed {
    use jsonwebtoken::{Algorithm, DecodingKey};

    pub type Parsed = ();

    pub fn parse_all(_: &DecodingKey, _: impl Fn(Algorithm) -> bool) {}

    pub fn verify(_: &Parsed, _: Algorithm, _: &[u8], _: &str) -> Option<bool> {
        None
    }
}

/// One snapshot of a provider's keys.
pub struct KeySet {
    keys: Vec<Arc<Key>>,
    by_kid: HashMap<Box<str>, usize>,
    /// A shared-secret set: its single key answers for any `kid`.
    any_kid: bool,
    /// Bumped by every successful load, so waiters can tell that a refresh happened.
    pub generation: u64,
}

/// The result of looking a key up.
pub enum Lookup<'a> {
    Found(&'a Arc<Key>),
    UnknownKid,
    MissingKid,
}

// === impl KeySet ===

impl KeySet {
    /// A key set of one shared HMAC secret.
    ///
    /// RFC 7518 §3.2: an HMAC key must be at least as long as the hash's output, so a secret shorter than
    /// an allowed algorithm needs is refused ([`JwksError::ShortSecret`]), never used.
    pub fn shared_secret(secret: &[u8], algorithms: AlgSet) -> Result<KeySet, JwksError> {
        let algorithms = algorithms.intersect(AlgSet::HMAC);
        for (algorithm, needed) in [
            (Algorithm::HS512, 64),
            (Algorithm::HS384, 48),
            (Algorithm::HS256, 32),
        ] {
            if algorithms.contains(algorithm) && secret.len() < needed {
                return Err(JwksError::ShortSecret {
                    bytes: secret.len(),
                    algorithm,
                    needed,
                });
            }
        }
        Ok(KeySet {
            keys: vec![Arc::new(Key::new(
                None,
                DecodingKey::from_secret(secret),
                algorithms,
            ))],
            by_kid: HashMap::new(),
            any_kid: true,
            generation: 0,
        })
    }

    /// `kid` is an exact lookup. A token without `kid` is matched only when the set has exactly one key.
    pub fn find(&self, kid: Option<&str>) -> Lookup<'_> {
        if self.any_kid {
            return Lookup::Found(&self.keys[0]);
        }
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(&i) => Lookup::Found(&self.keys[i]),
                None => Lookup::UnknownKid,
            },
            None if self.keys.len() == 1 => Lookup::Found(&self.keys[0]),
            None => Lookup::MissingKid,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a JWKS document (RFC 7517 §5), keeping the keys usable for signatures with an allowed
    /// algorithm. Unusable keys (encryption keys, unknown types, `oct` keys, other curves) are skipped.
    pub fn from_jwks(body: &[u8], allowed: AlgSet) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_slice(body).map_err(|_| JwksError::NotAJwks)?;
        let mut keys = Vec::new();
        let mut by_kid = HashMap::new();
        for value in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(key) = usable_key(&jwk, allowed) else {
                continue;
            };
            if let Some(kid) = &key.kid {
                if by_kid.contains_key(kid) {
                    // Two keys under one kid: the lookup would be ambiguous, keep the first.
                    continue;
                }
                by_kid.insert(kid.clone(), keys.len());
            }
            keys.push(Arc::new(key));
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(KeySet {
            keys,
            by_kid,
            any_kid: false,
            generation: 0,
        })
    }
}

/// The algorithms a JWK may verify: its own `alg` when it has one, otherwise what its type and curve allow;
/// always within the provider's allow-list. `oct` keys never come from a JWKS.
fn usable_key(jwk: &Jwk, allowed: AlgSet) -> Option<Key> {
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return None;
        }
    }
    // RFC 7517 §4.3: a key whose `key_ops` are given but do not include `verify` is not for verifying.
    if let Some(operations) = &jwk.common.key_operations {
        if !operations.contains(&KeyOperations::Verify) {
            return None;
        }
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgSet::RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => AlgSet::of([Algorithm::ES256]),
            EllipticCurve::P384 => AlgSet::of([Algorithm::ES384]),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => AlgSet::of([Algorithm::EdDSA]),
            _ => return None,
        },
        _ => return None,
    };
    let by_alg = match jwk.common.key_algorithm {
        None => by_type,
        Some(alg) => match key_algorithm(alg) {
            Some(alg) => AlgSet::of([alg]).intersect(by_type),
            None => return None,
        },
    };
    let algorithms = by_alg.intersect(allowed);
    if algorithms.is_empty() {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key::new(
        jwk.common.key_id.as_deref().map(Box::from),
        decoding,
        algorithms,
    ))
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Why a key set could not be loaded. Logged with the provider's name; never sent to a client.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("request failed: {0}")]
    RequestFailed(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("answered HTTP {0}")]
    BadStatus(u16),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("response is not a JWKS document")]
    NotAJwks,
    #[error("no usable signing key for the allowed algorithms")]
    NoUsableKeys,
    #[error("discovery document is not valid JSON with `issuer` and `jwks_uri`")]
    BadDiscovery,
    #[error(
        "discovery document names issuer `{found}`, expected `{expected}` (OIDC Discovery §4.3)"
    )]
    DiscoveryIssuerMismatch { expected: String, found: String },
    #[error("`jwks_uri` is not a usable URL")]
    BadJwksUri,
    #[error("discovered `jwks_uri` is plain http to a host other than loopback (dangerous_allow_plain_http is off)")]
    InsecureJwksUri,
    #[error("cannot read the key set bearer token: {0}")]
    Bearer(#[source] UpstreamError),
    #[error(
        "shared_secret is {bytes} bytes; {algorithm:?} needs at least {needed} (RFC 7518 §3.2)"
    )]
    ShortSecret {
        bytes: usize,
        algorithm: Algorithm,
        needed: usize,
    },
}

/// Where a provider's keys come from.
enum Source {
    /// Keys given at start (a shared secret, the dev issuer): never refreshed.
    Fixed,
    /// A JWKS fetched over HTTP, its URL configured or discovered from the issuer.
    Remote {
        http: Arc<dyn HttpClient>,
        issuer: String,
        configured: Option<Url>,
        /// The provider's `dangerous_allow_plain_http`, applied to a discovered `jwks_uri` too.
        allow_plain_http: bool,
        /// Sent to `configured` only (validation requires `jwks_uri` with a token).
        bearer: Option<BearerToken>,
    },
}

/// Refresh bookkeeping, behind the refresh lock.
#[derive(Default)]
struct RefreshState {
    discovered: Option<Url>,
    last_on_demand: Option<Instant>,
    /// When the refresher means to fetch next: a refresher started later (a reloaded runtime that kept this
    /// store) waits until then instead of fetching at once.
    next_at: Option<Instant>,
}

/// One provider's keys: the current snapshot and the means to refresh it.
pub struct KeyStore {
    provider: Arc<str>,
    source: Source,
    allowed: AlgSet,
    settings: JwksSettings,
    current: ArcSwapOption<KeySet>,
    refresh: async_lock::Mutex<RefreshState>,
    /// Fetch durations, failures and results, for `/metrics`.
    calls: UpstreamCalls,
}

// === impl KeyStore ===

impl KeyStore {
    /// A store whose keys are fixed at start.
    pub fn fixed(provider: Arc<str>, keys: KeySet) -> KeyStore {
        KeyStore {
            provider,
            source: Source::Fixed,
            allowed: AlgSet::default(),
            settings: JwksSettings::default(),
            current: ArcSwapOption::from_pointee(keys),
            refresh: async_lock::Mutex::new(RefreshState::default()),
            calls: UpstreamCalls::default(),
        }
    }

    /// A store fetched from `jwks_uri`, or from the URL that OIDC discovery on `issuer` names; fetches are
    /// reported to `recorder` (upstream kind `jwks`).
    #[allow(clippy::too_many_arguments)]
    pub fn remote(
        provider: Arc<str>,
        http: Arc<dyn HttpClient>,
        issuer: String,
        jwks_uri: Option<&str>,
        allowed: AlgSet,
        settings: JwksSettings,
        allow_plain_http: bool,
        recorder: &dyn Recorder,
    ) -> Result<KeyStore, JwksError> {
        let configured = jwks_uri
            .map(|u| Url::parse(u).map_err(|_| JwksError::BadJwksUri))
            .transpose()?;
        Ok(KeyStore {
            source: Source::Remote {
                http,
                issuer,
                configured,
                allow_plain_http,
                bearer: None,
            },
            allowed,
            settings,
            current: ArcSwapOption::empty(),
            refresh: async_lock::Mutex::new(RefreshState::default()),
            calls: UpstreamCalls::new(recorder, "jwks", &provider),
            provider,
        })
    }

    /// The provider's name, for the host's log lines.
    pub fn provider(&self) -> &Arc<str> {
        &self.provider
    }

    /// Sends `token` with every fetch of the configured `jwks_uri` (never with discovery).
    pub fn with_bearer(mut self, token: BearerToken) -> KeyStore {
        if let Source::Remote { bearer, .. } = &mut self.source {
            *bearer = Some(token);
        }
        self
    }

    /// The current keys, or `None` when none were ever loaded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.source, Source::Remote { .. })
    }

    /// Called when a token names a `kid` that `seen` does not have. At most one fetch per cooldown: callers
    /// queue on the refresh lock, and whoever finds that a refresh happened while it waited (the generation
    /// moved) returns at once to look again.
    pub async fn refresh_for_unknown_kid(&self, seen: &KeySet) {
        if !self.is_remote() {
            return;
        }
        let mut state = self.refresh.lock().await;
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|now| now.generation != seen.generation)
        {
            return;
        }
        let cooldown = Duration::from_secs(self.settings.unknown_kid_cooldown_seconds);
        if state.last_on_demand.is_some_and(|t| t.elapsed() < cooldown) {
            return;
        }
        state.last_on_demand = Some(Instant::now());
        if let Err(error) = self.refresh_locked(&mut state).await {
            tracing::warn!(provider.name = %self.provider, %error, "on-demand key set refresh failed; keeping the last good keys");
        }
    }

    /// Fetches the keys now; returns how long until the next refresh.
    async fn refresh_locked(&self, state: &mut RefreshState) -> Result<Duration, JwksError> {
        let Source::Remote {
            http,
            issuer,
            configured,
            allow_plain_http,
            bearer,
        } = &self.source
        else {
            return Ok(Duration::MAX);
        };
        let start = std::time::Instant::now();
        let result = async {
            let url = match (configured, &state.discovered) {
                (Some(url), _) | (None, Some(url)) => url.clone(),
                (None, None) => {
                    let url = self.discover(http, issuer).await?;
                    // The discovered URL gets the checks a configured one gets.
                    if !super::http::url_allowed(&url, *allow_plain_http) {
                        return Err(JwksError::InsecureJwksUri);
                    }
                    state.discovered = Some(url.clone());
                    url
                }
            };
            let bearer = match (bearer, configured) {
                (Some(token), Some(_)) => Some(token.clone()),
                _ => None,
            };
            let fetched = self.fetch_with(http, &url, bearer).await;
            if let Err(JwksError::BadStatus(404)) = &fetched {
                // The IdP may have moved its key set: discover again next time.
                state.discovered = None;
            }
            let (body, max_age) = fetched?;
            let mut keys = KeySet::from_jwks(&body, self.allowed)?;
            keys.generation = self
                .current
                .load()
                .as_ref()
                .map_or(1, |old| old.generation + 1);
            let count = keys.len();
            self.current.store(Some(Arc::new(keys)));
            tracing::info!(provider.name = %self.provider, jwks.keys = count, "key set loaded");
            Ok(self.next_refresh(max_age))
        }
        .await;
        self.calls.observe(start.elapsed(), result.is_ok());
        result
    }

    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        let s = &self.settings;
        match max_age {
            Some(age) => age.clamp(
                Duration::from_secs(s.min_refresh_seconds),
                Duration::from_secs(s.max_refresh_seconds),
            ),
            None => Duration::from_secs(s.refresh_seconds),
        }
    }

    async fn discover(&self, http: &Arc<dyn HttpClient>, issuer: &str) -> Result<Url, JwksError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = Url::parse(&url).map_err(|_| JwksError::BadJwksUri)?;
        let (body, _) = self.fetch(http, &url).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|_| JwksError::BadDiscovery)?;
        if doc.issuer != issuer {
            return Err(JwksError::DiscoveryIssuerMismatch {
                expected: issuer.to_owned(),
                found: doc.issuer,
            });
        }
        Url::parse(&doc.jwks_uri).map_err(|_| JwksError::BadJwksUri)
    }

    /// GET with a timeout and a bounded body; returns the body and the response's `max-age`.
    async fn fetch(
        &self,
        http: &Arc<dyn HttpClient>,
        url: &Url,
    ) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
        self.fetch_with(http, url, None).await
    }

    /// A GET with an optional bearer credential.
    async fn fetch_with(
        &self,
        http: &Arc<dyn HttpClient>,
        url: &Url,
        bearer: Option<BearerToken>,
    ) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
        let limit = self.settings.max_response_bytes;
        let mut request =
            HttpRequest::new(Method::Get, url.clone(), limit).header("accept", "application/json");
        request.timeout = Some(Duration::from_secs(self.settings.timeout_seconds));
        request.bearer = bearer;
        let response = http.send(request).await.map_err(|e| match e {
            UpstreamError::TooLarge(_) => JwksError::TooLarge(limit),
            UpstreamError::RequestFailed(e) => JwksError::RequestFailed(e),
            other @ UpstreamError::TokenFile(_) => JwksError::Bearer(other),
            other => JwksError::RequestFailed(other.into()),
        })?;
        if response.status != 200 {
            return Err(JwksError::BadStatus(response.status));
        }
        let max_age = response.header("cache-control").and_then(max_age);
        Ok((response.body, max_age))
    }

    /// How long a host's refresher waits before its first fetch: at once for a new store; for a store a
    /// reload kept, until the previous runtime's refresher meant to fetch next.
    pub async fn first_refresh_in(&self) -> Duration {
        self.refresh
            .lock()
            .await
            .next_at
            .map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            })
    }

    /// One scheduled refresh, for a host's runner: fetches the keys and returns how long to wait before
    /// the next one. Failures (counted in `failures`, which a success resets) back off (1 s doubling,
    /// capped at the minimum refresh interval) and never drop the last good keys.
    pub async fn refresh(&self, failures: &mut u32) -> Duration {
        let mut state = self.refresh.lock().await;
        let result = self.refresh_locked(&mut state).await;
        let delay = match result {
            Ok(next) => {
                *failures = 0;
                next
            }
            Err(error) => {
                *failures = failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << (*failures).min(10).saturating_sub(1))
                    .min(Duration::from_secs(self.settings.min_refresh_seconds));
                tracing::warn!(
                    provider.name = %self.provider,
                    %error,
                    jwks.failures = *failures,
                    jwks.loaded = self.is_loaded(),
                    retry_in_seconds = backoff.as_secs(),
                    "key set refresh failed; keeping the last good keys"
                );
                backoff
            }
        };
        state.next_at = Instant::now().checked_add(delay);
        delay
    }
}
/// `max-age` from a `Cache-Control` value (RFC 9111 §5.2.2.1); `no-cache`/`no-store` count as 0.
fn max_age(value: &str) -> Option<Duration> {
    let mut found = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        if let Some((name, v)) = directive.split_once('=') {
            if name.trim().eq_ignore_ascii_case("max-age") {
                found = v
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store, max-age=600"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keys_are_pinned_to_their_own_algorithms() {
        let body = format!(
            r#"{{"keys":[{EC_KEY},
            {{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
            {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
            {{"kty":"XYZ","kid":"weird"}}]}}"#
        );
        assert_eq!(
            AlgSet::PUBLIC_KEY,
            AlgSet::of(ALGORITHMS[..9].iter().copied())
        );
        assert!(!AlgSet::PUBLIC_KEY.contains(Algorithm::HS256));
        let all = AlgSet::of(ALGORITHMS);
        let set = KeySet::from_jwks(body.as_bytes(), all).unwrap();
        assert_eq!(set.len(), 1, "oct, encryption and unknown keys are skipped");
        let Lookup::Found(key) = set.find(Some("ec1")) else {
            panic!("ec1 is present")
        };
        assert_eq!(key.algorithms, AlgSet::of([Algorithm::ES256]));
        assert!(matches!(set.find(Some("hmac")), Lookup::UnknownKid));
        // One key: a token without kid may use it.
        assert!(matches!(set.find(None), Lookup::Found(_)));
    }

    #[test]
    fn a_key_whose_key_ops_exclude_verify_is_never_used() {
        for ops in [r#"["encrypt"]"#, r#"["sign"]"#, "[]"] {
            let body = format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k","key_ops":{ops},"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}]}}"#
            );
            assert!(
                matches!(
                    KeySet::from_jwks(body.as_bytes(), AlgSet::of(ALGORITHMS)),
                    Err(JwksError::NoUsableKeys)
                ),
                "key_ops {ops}"
            );
        }
        let body = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","key_ops":["sign","verify"],"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        assert_eq!(
            KeySet::from_jwks(body.as_bytes(), AlgSet::of(ALGORITHMS))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn an_hmac_secret_shorter_than_its_hash_is_refused() {
        let hmac = AlgSet::of([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
        for (algorithm, needed) in [
            (Algorithm::HS256, 32),
            (Algorithm::HS384, 48),
            (Algorithm::HS512, 64),
        ] {
            let only = AlgSet::of([algorithm]);
            assert!(
                matches!(
                    KeySet::shared_secret(&vec![7; needed - 1], only),
                    Err(JwksError::ShortSecret { needed: n, .. }) if n == needed
                ),
                "{algorithm:?}"
            );
            assert!(KeySet::shared_secret(&vec![7; needed], only).is_ok());
        }
        // Every listed algorithm must be satisfied: 32 bytes with HS512 allowed is refused.
        let error = KeySet::shared_secret(&[7; 32], hmac).err().unwrap();
        assert_eq!(
            error.to_string(),
            "shared_secret is 32 bytes; HS512 needs at least 64 (RFC 7518 §3.2)"
        );
    }

    #[test]
    fn allow_list_filters_keys() {
        let body = format!(r#"{{"keys":[{EC_KEY}]}}"#);
        let rsa_only = AlgSet::of([Algorithm::RS256]);
        assert!(matches!(
            KeySet::from_jwks(body.as_bytes(), rsa_only),
            Err(JwksError::NoUsableKeys)
        ));
        assert!(matches!(
            KeySet::from_jwks(b"{\"not\":1}", rsa_only),
            Err(JwksError::NotAJwks)
        ));
    }

    #[test]
    fn key_alg_mismatching_its_type_is_skipped() {
        let body = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"RS256","kid":"x",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        assert!(KeySet::from_jwks(body.as_bytes(), AlgSet::of(ALGORITHMS)).is_err());
    }
}
