//! JWT bearer tokens (RFC 7519), validated as RFC 8725 asks: the key decides the algorithm, `none` never
//! passes, `jku`/`x5u`/`jwk`/`x5c` never supply keys, an unknown `crit` is refused, `iss` is exact, `aud`
//! any-of, `exp` required, all time claims numeric and checked with a short leeway.
//!
//! Several issuers may be configured: the token's unverified `iss` picks the provider, and nothing it says
//! is trusted until the signature of that provider's key has been checked. Verified tokens are cached by the
//! SHA-256 of the token, never past their `exp`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use moka::sync::Cache;
use serde_json::{Map, Value};

use super::jwks::{AlgSet, KeyStore, Lookup};
use super::Outcome;
use crate::clock::Clock;
use crate::config::{JwtProviderConfig, ProviderConfig};
use crate::decision::{DenyReason, Unavailable};
use crate::identity::{Identity, IdentityBuilder, MachineSuffix};
use crate::recorder::{CacheCounters, Recorder, VerificationCounters};

/// One issuer's validation settings and keys, built once at start.
pub struct JwtProvider {
    name: Arc<str>,
    issuer: Arc<str>,
    audiences: Box<[Box<str>]>,
    allowed: AlgSet,
    leeway: f64,
    max_token_bytes: usize,
    required_typ: Option<Box<str>>,
    claims: IdentityBuilder,
    cache_ttl: Option<Duration>,
    keys: Arc<KeyStore>,
}

// === impl JwtProvider ===

impl JwtProvider {
    pub fn new(
        common: &ProviderConfig,
        config: &JwtProviderConfig,
        keys: Arc<KeyStore>,
    ) -> JwtProvider {
        JwtProvider {
            name: Arc::from(common.name.as_str()),
            issuer: Arc::from(config.issuer.as_str()),
            audiences: config
                .audiences
                .iter()
                .map(|a| Box::from(a.as_str()))
                .collect(),
            allowed: AlgSet::from_config(&config.algorithms),
            leeway: config.leeway_seconds as f64,
            max_token_bytes: config.max_token_bytes,
            required_typ: config.required_typ.as_deref().map(Box::from),
            claims: IdentityBuilder::new(&config.claim_headers, &common.claims_mapping)
                .with_machine_suffix(MachineSuffix::from_config(
                    config.machine_subject_suffix.as_deref(),
                )),
            cache_ttl: (config.cache.max_entries > 0)
                .then(|| Duration::from_secs(config.cache.max_ttl_seconds)),
            keys,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Verifies a parsed token that names this provider's issuer.
    /// `checked` receives what the signature check found, when the token got that far.
    async fn verify(
        &self,
        token: Parsed<'_>,
        now: i64,
        limit: &VerificationLimit,
        checked: &mut Option<SignatureCheck>,
    ) -> Result<Identity, Outcome> {
        let reject = |r| Err(Outcome::Rejected(r));
        if token.len > self.max_token_bytes {
            return reject(DenyReason::TokenTooLarge);
        }
        if !self.allowed.contains(token.alg) {
            return reject(DenyReason::AlgorithmNotAllowed);
        }
        if let Some(required) = &self.required_typ {
            let typ = token.typ.as_deref().unwrap_or("");
            let typ = strip_prefix_ignore_case(typ, "application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case(required) {
                return reject(DenyReason::WrongType);
            }
        }

        let Some(mut keys) = self.keys.current() else {
            return Err(Outcome::Unavailable(Unavailable::KeysNotLoaded));
        };
        if let Lookup::UnknownKid = keys.find(token.kid.as_deref()) {
            // Boxed: a key set fetch is rare, and its future would otherwise size every Check's.
            Box::pin(self.keys.refresh_for_unknown_kid(&keys)).await;
            keys = self.keys.current().unwrap_or(keys);
        }
        let key = match keys.find(token.kid.as_deref()) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => return reject(DenyReason::UnknownKey),
            Lookup::MissingKid => return reject(DenyReason::MissingKeyId),
        };
        // RFC 8725 §3.1: the key's own algorithms decide; the header's `alg` is only checked against them.
        if !key.algorithms.contains(token.alg) {
            return reject(DenyReason::AlgorithmNotAllowed);
        }
        let valid = {
            let _permit = limit.acquire().await;
            key.verify(token.alg, token.message.as_bytes(), token.signature)
        };
        *checked = Some(SignatureCheck {
            generation: keys.generation,
            valid,
        });
        if !valid {
            return reject(DenyReason::BadSignature);
        }

        let expires_at = self
            .check_claims(&token.claims, now)
            .map_err(Outcome::Rejected)?;
        if crate::identity::unusable_subject(&token.claims) {
            return reject(DenyReason::InvalidSubject);
        }
        Ok(self.identity(token.claims, expires_at))
    }

    /// RFC 7519 §4.1: `exp` required, `nbf` and `iat` when present, all numeric; `aud` any-of.
    fn check_claims(&self, claims: &Map<String, Value>, now: i64) -> Result<i64, DenyReason> {
        let now = now as f64;
        let exp = time_claim(claims, "exp")?.ok_or(DenyReason::MissingExpiry)?;
        if now >= exp + self.leeway {
            return Err(DenyReason::Expired);
        }
        if let Some(nbf) = time_claim(claims, "nbf")? {
            if now + self.leeway < nbf {
                return Err(DenyReason::NotYetValid);
            }
        }
        if let Some(iat) = time_claim(claims, "iat")? {
            if iat > now + self.leeway {
                return Err(DenyReason::IssuedInFuture);
            }
        }
        let accepted = |aud: &str| self.audiences.iter().any(|a| &**a == aud);
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str().is_some_and(accepted)),
            _ => false,
        };
        if !aud_ok {
            return Err(DenyReason::WrongAudience);
        }
        Ok(exp.floor() as i64)
    }

    fn identity(&self, claims: Map<String, Value>, expires_at: i64) -> Identity {
        let mut identity =
            self.claims
                .claims_identity(&self.name, Arc::clone(&self.issuer), claims, expires_at);
        // The chain checks the proof of every bound token this provider authenticates (crate::dpop).
        identity.dpop_bound = crate::dpop::is_bound(&identity.claims);
        identity
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, DenyReason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(DenyReason::MalformedTimeClaim),
        Some(_) => Err(DenyReason::MalformedTimeClaim),
    }
}

/// A token split and decoded, not yet verified.
struct Parsed<'a> {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    claims: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    message: &'a str,
    signature: &'a str,
    len: usize,
}

// === impl Parsed ===

impl<'a> Parsed<'a> {
    fn parse(token: &'a str) -> Result<Parsed<'a>, DenyReason> {
        #[derive(serde::Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
            #[serde(default)]
            typ: Option<String>,
            #[serde(default)]
            crit: Option<Value>,
        }
        let (message, signature) = token.rsplit_once('.').ok_or(DenyReason::MalformedToken)?;
        let (header, payload) = message.split_once('.').ok_or(DenyReason::MalformedToken)?;
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| DenyReason::MalformedToken)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| DenyReason::MalformedToken)?;
        // RFC 7515 §4.1.11: we implement no extension, so any `crit` is one we do not understand.
        if header.crit.is_some() {
            return Err(DenyReason::UnsupportedCritical);
        }
        let alg = match header.alg.as_str() {
            a if a.eq_ignore_ascii_case("none") => return Err(DenyReason::AlgorithmNone),
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            _ => return Err(DenyReason::UnsupportedAlgorithm),
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| DenyReason::MalformedToken)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| DenyReason::MalformedToken)?;
        Ok(Parsed {
            alg,
            kid: header.kid,
            typ: header.typ,
            claims,
            message,
            signature,
            len: token.len(),
        })
    }
}

#[derive(Clone)]
struct Cached {
    identity: Arc<Identity>,
    provider: usize,
    ttl: Duration,
}

struct ExpireAtTokenExpiry;

// === impl Expiry ===

impl moka::Expiry<[u8; 32], Cached> for ExpireAtTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What a signature check found, and under which key set.
struct SignatureCheck {
    generation: u64,
    valid: bool,
}

/// A token whose signature failed: under which provider, and which of its key sets.
#[derive(Clone, Copy)]
struct BadSignature {
    provider: usize,
    generation: u64,
}

/// The signature checks that may run at once, shared by every `jwt` provider of a runtime.
///
/// A flood of distinct forged tokens costs one signature check each (the bad-signature memory only helps
/// against repeats). With fewer permits than cores, those checks can occupy at most that many cores: the
/// remaining ones keep answering cached tokens and credential-free requests. A check waiting for a permit
/// costs no CPU and is still bounded by the caller's deadline and by `server.max_concurrent_checks`.
#[derive(Clone)]
struct VerificationLimit {
    permits: Arc<async_lock::Semaphore>,
    size: usize,
    counters: VerificationCounters,
}

// === impl VerificationLimit ===

impl VerificationLimit {
    fn new(size: usize, counters: VerificationCounters) -> VerificationLimit {
        let size = size.max(1);
        VerificationLimit {
            permits: Arc::new(async_lock::Semaphore::new(size)),
            size,
            counters,
        }
    }

    /// A permit to run one signature check; counts a wait when none was free.
    async fn acquire(&self) -> Option<async_lock::SemaphoreGuard<'_>> {
        if let Some(permit) = self.permits.try_acquire() {
            return Some(permit);
        }
        self.counters.waited();
        Some(self.permits.acquire().await)
    }
}

/// How many bad-signature tokens are remembered, and for how long. A flood of one forged token costs one
/// verification per key set and TTL; a flood of distinct ones still costs one each.
const BAD_SIGNATURE_ENTRIES: u64 = 10_000;
const BAD_SIGNATURE_TTL: Duration = Duration::from_secs(60);

/// Every `jwt` provider, indexed by issuer, with one shared cache of verified tokens.
pub struct JwtProviders {
    providers: Vec<JwtProvider>,
    by_issuer: HashMap<Arc<str>, usize>,
    cache: Option<Cache<[u8; 32], Cached>>,
    /// The token cache's hits, misses and evictions.
    counters: CacheCounters,
    /// Tokens whose signature failed, by the same digest: answered again without verifying, as long as
    /// the provider's key set is the one they failed under.
    bad_signatures: Cache<[u8; 32], BadSignature>,
    /// Signature verifications done (cache misses that reached a key).
    verifications: AtomicU64,
    /// How many signature checks may run at once (`server.max_concurrent_verifications`).
    limit: VerificationLimit,
    max_token_bytes: usize,
    clock: Clock,
}

// === impl JwtProviders ===

impl JwtProviders {
    /// `max_verifications`: the signature checks that may run at once (at least one). The token cache
    /// (cache `token`, no provider: every `jwt` provider shares it) and the verifications are counted in
    /// `recorder`.
    pub fn new(
        providers: Vec<JwtProvider>,
        cache_entries: u64,
        max_verifications: usize,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> JwtProviders {
        let by_issuer = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (Arc::clone(&p.issuer), i))
            .collect();
        let counters = match cache_entries {
            0 => CacheCounters::default(),
            _ => CacheCounters::new(recorder, "token", &Arc::from("")),
        };
        let cache = (cache_entries > 0).then(|| {
            let counters = counters.clone();
            Cache::builder()
                .max_capacity(cache_entries)
                .expire_after(ExpireAtTokenExpiry)
                .eviction_listener(move |_, _, cause| counters.removed(cause.was_evicted()))
                .build()
        });
        let max_token_bytes = providers
            .iter()
            .map(|p| p.max_token_bytes)
            .max()
            .unwrap_or(0);
        JwtProviders {
            providers,
            by_issuer,
            cache,
            counters,
            bad_signatures: Cache::builder()
                .max_capacity(BAD_SIGNATURE_ENTRIES)
                .time_to_live(BAD_SIGNATURE_TTL)
                .build(),
            verifications: AtomicU64::new(0),
            limit: VerificationLimit::new(max_verifications, VerificationCounters::new(recorder)),
            max_token_bytes,
            clock,
        }
    }

    /// Shares `previous`'s verification permits when the limit is unchanged, so that a reload never runs
    /// two sets of permits side by side.
    pub fn keeping_limit_of(mut self, previous: &JwtProviders) -> JwtProviders {
        if previous.limit.size == self.limit.size {
            self.limit = previous.limit.clone();
        }
        self
    }

    /// Takes over `previous`'s cache of verified tokens (a reload that left every `jwt` provider as it was,
    /// in the same order: a cached entry names its provider by index).
    pub fn keeping_cache_of(mut self, previous: &JwtProviders) -> JwtProviders {
        self.cache = previous.cache.clone();
        self
    }

    pub fn providers(&self) -> &[JwtProvider] {
        &self.providers
    }

    pub fn cached_tokens(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Signature verifications done so far (read by tests; a metric could export it).
    #[cfg(test)]
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Whether the token's (unverified) `iss` names a provider `accept` takes. A token too large to look at
    /// counts as owned, so it never leaves the `jwt` providers.
    pub fn owns(&self, token: &str, accept: impl Fn(usize) -> bool) -> bool {
        if self.providers.is_empty() {
            return false;
        }
        if token.len() > self.max_token_bytes {
            return true;
        }
        let Some(payload) = token.split('.').nth(1) else {
            return false;
        };
        #[derive(serde::Deserialize)]
        struct Issuer {
            iss: Option<String>,
        }
        URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Issuer>(&bytes).ok())
            .and_then(|claims| claims.iss)
            .and_then(|iss| self.by_issuer.get(iss.as_str()).copied())
            .is_some_and(accept)
    }

    /// Validates a JWS-shaped bearer token. The token's `iss` picks the provider; `accept` says whether
    /// that provider may take it here (it is part of the route and reads the place the token was found).
    pub async fn authenticate(&self, token: &str, accept: impl Fn(usize) -> bool) -> Outcome {
        // Size first: nothing of an oversized token is decoded (RFC 8725 §3.7 spirit, and memory).
        if token.len() > self.max_token_bytes {
            return Outcome::Rejected(DenyReason::TokenTooLarge);
        }
        let now = self.clock.now();
        let digest = super::http::digest(token);
        if let Some(cache) = &self.cache {
            let hit = cache.get(&digest);
            if hit.is_some() {
                self.counters.hit();
            } else {
                self.counters.miss();
            }
            if let Some(hit) = hit {
                if !accept(hit.provider) {
                    return Outcome::Rejected(DenyReason::UntrustedIssuer);
                }
                if hit.identity.expires_at > now {
                    return Outcome::Authenticated(hit.identity);
                }
                cache.invalidate(&digest);
            }
        }
        // The same bad token again: the same denial, without a second verification.
        if let Some(bad) = self.bad_signatures.get(&digest) {
            let keys = self.providers[bad.provider].keys.current();
            if keys.is_some_and(|k| k.generation == bad.generation) {
                return Outcome::Rejected(if accept(bad.provider) {
                    DenyReason::BadSignature
                } else {
                    DenyReason::UntrustedIssuer
                });
            }
        }
        let parsed = match Parsed::parse(token) {
            Ok(parsed) => parsed,
            Err(reason) => return Outcome::Rejected(reason),
        };
        let index = match parsed.claims.get("iss") {
            Some(Value::String(iss)) => match self.by_issuer.get(iss.as_str()) {
                Some(&i) if accept(i) => i,
                _ => return Outcome::Rejected(DenyReason::UntrustedIssuer),
            },
            _ => return Outcome::Rejected(DenyReason::MissingIssuer),
        };
        let provider = &self.providers[index];
        let mut checked = None;
        let verified = provider
            .verify(parsed, now, &self.limit, &mut checked)
            .await;
        if let Some(check) = checked {
            self.verifications.fetch_add(1, Ordering::Relaxed);
            self.limit.counters.verified(check.valid);
            if !check.valid {
                let bad = BadSignature {
                    provider: index,
                    generation: check.generation,
                };
                self.bad_signatures.insert(digest, bad);
            }
        }
        match verified {
            Ok(identity) => {
                let identity = Arc::new(identity);
                if let (Some(cache), Some(max_ttl)) = (&self.cache, provider.cache_ttl) {
                    let remaining = u64::try_from(identity.expires_at - now).unwrap_or(0);
                    let ttl = Duration::from_secs(remaining).min(max_ttl);
                    if !ttl.is_zero() {
                        cache.insert(
                            digest,
                            Cached {
                                identity: Arc::clone(&identity),
                                provider: index,
                                ttl,
                            },
                        );
                    }
                }
                Outcome::Authenticated(identity)
            }
            Err(outcome) => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn parse_refuses_none_crit_and_garbage() {
        let payload = b64(r#"{"iss":"x"}"#);
        let none = format!("{}.{payload}.", b64(r#"{"alg":"none"}"#));
        assert_eq!(Parsed::parse(&none).err(), Some(DenyReason::AlgorithmNone));
        let none_upper = format!("{}.{payload}.", b64(r#"{"alg":"NONE"}"#));
        assert_eq!(
            Parsed::parse(&none_upper).err(),
            Some(DenyReason::AlgorithmNone)
        );
        let crit = format!(
            "{}.{payload}.sig",
            b64(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#)
        );
        assert_eq!(
            Parsed::parse(&crit).err(),
            Some(DenyReason::UnsupportedCritical)
        );
        let odd = format!("{}.{payload}.sig", b64(r#"{"alg":"XS999"}"#));
        assert_eq!(
            Parsed::parse(&odd).err(),
            Some(DenyReason::UnsupportedAlgorithm)
        );
        let numeric_kid = format!("{}.{payload}.sig", b64(r#"{"alg":"RS256","kid":7}"#));
        assert_eq!(
            Parsed::parse(&numeric_kid).err(),
            Some(DenyReason::MalformedToken)
        );
        let array_payload = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64("[1]"));
        assert_eq!(
            Parsed::parse(&array_payload).err(),
            Some(DenyReason::MalformedToken)
        );
        assert_eq!(
            Parsed::parse("a.b.c").err(),
            Some(DenyReason::MalformedToken)
        );
    }

    /// One HS256 provider with `secret`, and a token for it signed with `signed_with`.
    fn hs256(secret: &[u8], signed_with: &[u8]) -> (JwtProviders, String) {
        hs256_recording(secret, signed_with, &crate::recorder::NoRecorder)
    }

    fn hs256_recording(
        secret: &[u8],
        signed_with: &[u8],
        recorder: &dyn Recorder,
    ) -> (JwtProviders, String) {
        let yaml = "providers:
  - {name: h, type: jwt, issuer: 'https://h.example/', audiences: [api], algorithms: [HS256],
     shared_secret: {env: UNUSED_IN_THIS_TEST}}";
        let config = crate::config::Config::from_yaml_str(yaml).unwrap();
        let common = &config.providers[0];
        let crate::config::ProviderKind::Jwt(jwt) = &common.kind else {
            unreachable!("a jwt provider")
        };
        let keys = KeyStore::fixed(
            Arc::from("h"),
            super::super::jwks::KeySet::shared_secret(secret, AlgSet::of([Algorithm::HS256]))
                .unwrap(),
        );
        let provider = JwtProvider::new(common, jwt, Arc::new(keys));
        let providers = JwtProviders::new(vec![provider], 100, 1, Clock::system(), recorder);
        let claims = serde_json::json!({
            "iss": "https://h.example/", "aud": "api", "sub": "u", "exp": 4_000_000_000_i64,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(signed_with),
        )
        .unwrap();
        (providers, token)
    }

    #[tokio::test]
    async fn signature_checks_wait_for_a_permit_and_cached_tokens_do_not() {
        let metrics = crate::recorder::MemoryRecorder::default();
        let (providers, forged) = hs256_recording(
            b"the real secret, 32 bytes or more",
            b"a guessed secret, 32 bytes or more",
            &metrics,
        );
        let (_, valid) = hs256(
            b"the real secret, 32 bytes or more",
            b"the real secret, 32 bytes or more",
        );
        assert!(matches!(
            providers.authenticate(&valid, |_| true).await,
            Outcome::Authenticated(_)
        ));
        // Every permit taken, as by a flood of forged tokens being verified.
        let held = providers.limit.permits.try_acquire().unwrap();
        let waits_before = metrics.count("verifications.waited");
        let mut forged_check = std::pin::pin!(providers.authenticate(&forged, |_| true));
        let waited = tokio::time::timeout(Duration::from_millis(100), forged_check.as_mut()).await;
        assert!(waited.is_err(), "a signature check ran without a permit");
        // A cached token needs no signature check: answered while the permits are taken.
        let cached = tokio::time::timeout(
            Duration::from_millis(100),
            providers.authenticate(&valid, |_| true),
        )
        .await;
        assert!(matches!(cached, Ok(Outcome::Authenticated(_))));
        drop(held);
        assert!(matches!(
            forged_check.await,
            Outcome::Rejected(DenyReason::BadSignature)
        ));
        assert_eq!(metrics.count("verifications.waited"), waits_before + 1);
        assert_eq!(metrics.count("verifications.invalid"), 1);
    }

    #[tokio::test]
    async fn a_repeated_bad_signature_is_verified_once() {
        let (providers, forged) = hs256(
            b"the real secret, 32 bytes or more",
            b"a guessed secret, 32 bytes or more",
        );
        for _ in 0..3 {
            let outcome = providers.authenticate(&forged, |_| true).await;
            assert!(matches!(
                outcome,
                Outcome::Rejected(DenyReason::BadSignature)
            ));
        }
        assert_eq!(providers.verifications(), 1);
        // On a route that does not take this provider, the remembered token is refused as before.
        let outcome = providers.authenticate(&forged, |_| false).await;
        assert!(matches!(
            outcome,
            Outcome::Rejected(DenyReason::UntrustedIssuer)
        ));
        // A distinct bad token is verified: the memory is by token, not by issuer.
        let mut other = forged.clone();
        let last = if other.ends_with('A') { "B" } else { "A" };
        other.replace_range(other.len() - 1.., last);
        let outcome = providers.authenticate(&other, |_| true).await;
        assert!(matches!(
            outcome,
            Outcome::Rejected(DenyReason::BadSignature)
        ));
        assert_eq!(providers.verifications(), 2);
    }

    #[tokio::test]
    async fn a_good_token_is_not_remembered_as_bad() {
        let (providers, token) = hs256(
            b"the real secret, 32 bytes or more",
            b"the real secret, 32 bytes or more",
        );
        let outcome = providers.authenticate(&token, |_| true).await;
        assert!(matches!(outcome, Outcome::Authenticated(_)));
        let digest = super::super::http::digest(&token);
        assert!(!providers.bad_signatures.contains_key(&digest));
    }

    #[test]
    fn typ_prefix_is_optional() {
        assert_eq!(
            strip_prefix_ignore_case("application/at+jwt", "application/"),
            Some("at+jwt")
        );
        assert_eq!(strip_prefix_ignore_case("at+jwt", "application/"), None);
    }
}
