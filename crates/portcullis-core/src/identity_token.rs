//! The signed identity for the upstream: on an allow, a short-lived JWT signed by portcullis (ES256, `typ`
//! `JWT`, `kid` = the key's RFC 7638 thumbprint) naming the principal, the provider, the route and the
//! decision, so a service can verify the caller itself. The key set is served on the admin port.
//!
//! Keys: a configured PKCS#8 key, or a generated one kept in the state directory. With `rotation`, a new
//! key is generated every `every_seconds`, published at once and used for signing only
//! `publish_ahead_seconds` later; a key stays published until the last token it can have signed has
//! expired (`ttl_seconds` after its successor took over).
//!
//! Signing is not done per request for a cached identity: the token signed for an identity (the same
//! `Arc`, from a provider's cache) on a route and audience is reused while more than half its lifetime is
//! left. The cache key holds the `Arc`, so its address cannot be reused by another identity meanwhile.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::{IdentityTokenConfig, Problem};
use crate::env::Env;
use crate::identity::{Identity, PrincipalKind};

pub use crate::env::KeyStorage;

/// The file in the state directory that keeps generated keys (the server's [`KeyStorage`]).
pub const KEYS_FILE: &str = "identity-keys.json";
/// How many signed tokens are kept for reuse.
const CACHE_CAPACITY: u64 = 10_000;

/// The signer, its keys and its token cache.
pub struct IdentityTokens {
    header: Box<str>,
    issuer: Arc<str>,
    audience: Arc<str>,
    ttl: i64,
    claims: Box<[Box<str>]>,
    ring: RwLock<Ring>,
    cache: moka::sync::Cache<CacheKey, Arc<Signed>>,
    /// The token cache's hits, misses and evictions.
    counters: crate::recorder::CacheCounters,
    clock: Clock,
}

impl std::fmt::Debug for IdentityTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityTokens")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The keys, oldest first.
struct Ring {
    keys: Vec<RingKey>,
    /// Generated keys rotate; `None` for a configured key or without `rotation`.
    rotation: Option<Rotation>,
    /// Where generated keys are kept, and how new ones are made; `None` for a configured key.
    storage: Option<(Arc<dyn KeyStorage>, PathBuf)>,
}

struct RingKey {
    kid: Arc<str>,
    encoding: EncodingKey,
    jwk: Value,
    created_at: i64,
    /// Kept to write the state file.
    pkcs8: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Rotation {
    every: i64,
    publish_ahead: i64,
    /// The token lifetime: how long a key stays published after its successor took over.
    ttl: i64,
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct StoredKeys {
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    created_at: i64,
    /// Standard base64 of the PKCS#8 document.
    pkcs8: String,
}

/// A signed token and its times.
struct Signed {
    token: Arc<str>,
    iat: i64,
    exp: i64,
}

/// An identity (by `Arc` identity), a route and an audience.
#[derive(Clone)]
struct CacheKey {
    identity: Arc<Identity>,
    route: usize,
    audience: Arc<str>,
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.identity, &other.identity)
            && self.route == other.route
            && self.audience == other.audience
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.identity).hash(state);
        self.route.hash(state);
        self.audience.hash(state);
    }
}

/// What a token is signed for.
pub struct Subject<'a> {
    pub identity: &'a Arc<Identity>,
    pub route: &'a str,
    /// The route's index, part of the cache key.
    pub route_index: usize,
    /// The route's own audience, if it has one.
    pub audience: Option<&'a Arc<str>>,
    pub decision_id: &'a str,
}

// === impl IdentityTokens ===

impl IdentityTokens {
    /// Reads or generates the key. Problems carry their field path.
    pub fn build(config: &IdentityTokenConfig, env: &Env) -> Result<IdentityTokens, Problem> {
        let secrets = &env.sources;
        let clock = env.clock.clone();
        let now = clock.now();
        let ring = match &config.signing_key {
            Some(secret) => {
                let problem = |message: String| Problem {
                    path: "identity_token.signing_key".to_owned(),
                    message,
                };
                let pem = secret
                    .resolve(secrets)
                    .map_err(|e| problem(e.to_string()))?;
                let der = pkcs8_from_pem(pem.expose()).ok_or_else(|| {
                    problem("must be a PEM `PRIVATE KEY` (PKCS#8) of a P-256 key".to_owned())
                })?;
                let key = RingKey::from_pkcs8(der, i64::MIN).ok_or_else(|| {
                    problem("must be a PEM `PRIVATE KEY` (PKCS#8) of a P-256 key".to_owned())
                })?;
                Ring {
                    keys: vec![key],
                    rotation: None,
                    storage: None,
                }
            }
            None => {
                let rotation = config.rotation.as_ref().map(|r| Rotation {
                    every: r.every_seconds as i64,
                    publish_ahead: r.publish_ahead_seconds as i64,
                    ttl: config.ttl_seconds as i64,
                });
                let storage = (Arc::clone(&env.key_storage), config.state_dir.clone());
                Ring::load_or_create(storage, rotation, now).map_err(|message| Problem {
                    path: "identity_token.state_dir".to_owned(),
                    message,
                })?
            }
        };
        let ttl = config.ttl_seconds as i64;
        let counters =
            crate::recorder::CacheCounters::new(&*env.recorder, "identity_token", &Arc::from(""));
        let evicted = counters.clone();
        Ok(IdentityTokens {
            header: config.header.as_str().into(),
            issuer: config.issuer.as_str().into(),
            audience: config.audience.as_str().into(),
            ttl,
            claims: config.claims.iter().map(|c| c.as_str().into()).collect(),
            ring: RwLock::new(ring),
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(std::time::Duration::from_secs(config.ttl_seconds))
                .eviction_listener(move |_, _, cause| evicted.removed(cause.was_evicted()))
                .build(),
            counters,
            clock,
        })
    }

    /// The request header that carries the token.
    pub fn header(&self) -> &str {
        &self.header
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token for an allowed identity: a cached one with more than half its lifetime left, else a new
    /// one. `None` for an anonymous identity, an identity whose credential has expired, or if signing
    /// fails (logged; the allow goes on without the token, and the upstream that requires one refuses).
    pub fn token(&self, subject: &Subject<'_>) -> Option<Arc<str>> {
        if subject.identity.kind == PrincipalKind::Anonymous {
            return None;
        }
        let now = self.clock.now();
        let audience = subject.audience.unwrap_or(&self.audience);
        let key = CacheKey {
            identity: Arc::clone(subject.identity),
            route: subject.route_index,
            audience: Arc::clone(audience),
        };
        if let Some(signed) = self.cache.get(&key) {
            if (signed.exp - now) * 2 > signed.exp - signed.iat {
                self.counters.hit();
                return Some(Arc::clone(&signed.token));
            }
        }
        self.counters.miss();
        let signed = Arc::new(self.sign(subject, audience, now)?);
        let token = Arc::clone(&signed.token);
        self.cache.insert(key, signed);
        Some(token)
    }

    fn sign(&self, subject: &Subject<'_>, audience: &str, now: i64) -> Option<Signed> {
        let identity = &**subject.identity;
        if identity.expires_at <= now {
            return None;
        }
        // Never beyond the credential's own `exp`.
        let exp = now.saturating_add(self.ttl).min(identity.expires_at);
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(&*self.issuer));
        claims.insert("aud".into(), Value::from(audience));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(exp));
        claims.insert("jti".into(), Value::from(subject.decision_id));
        if let Some(sub) = &identity.subject {
            claims.insert("sub".into(), Value::from(sub.as_str()));
        }
        claims.insert("provider".into(), Value::from(&*identity.provider));
        claims.insert("principal_kind".into(), Value::from(identity.kind.as_str()));
        claims.insert("route".into(), Value::from(subject.route));
        claims.insert("decision_id".into(), Value::from(subject.decision_id));
        for name in self.claims.iter() {
            let value = match &**name {
                "sub" => continue,
                "scope" if !identity.scopes.is_empty() => Value::from(identity.scopes.as_str()),
                "client_id" => match &identity.client_id {
                    Some(id) => Value::from(id.as_str()),
                    None => continue,
                },
                other => match identity.claims.get(other) {
                    Some(v) if !v.is_null() => v.clone(),
                    _ => continue,
                },
            };
            claims.insert(name.to_string(), value);
        }
        let (kid, token) = {
            let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
            ring.refresh(now);
            let key = ring.signer(now)?;
            let mut header = Header::new(Algorithm::ES256);
            header.typ = Some("JWT".to_owned());
            header.kid = Some(key.kid.to_string());
            let token = jsonwebtoken::encode(&header, &claims, &key.encoding);
            (Arc::clone(&key.kid), token)
        };
        match token {
            Ok(token) => Some(Signed {
                token: token.into(),
                iat: now,
                exp,
            }),
            Err(e) => {
                tracing::error!(identity_token.kid = %kid, error = %e, "cannot sign the identity token");
                None
            }
        }
    }

    /// The published key set (RFC 7517): every key that signs, will sign, or signed a token that has not
    /// expired yet.
    pub fn jwks(&self) -> Value {
        let now = self.clock.now();
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        ring.refresh(now);
        let keys: Vec<Value> = ring
            .published(now, self.ttl)
            .map(|k| k.jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    /// An OpenID Connect discovery document naming the issuer and the key set at `jwks_uri`.
    pub fn discovery(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": &*self.issuer,
            "jwks_uri": jwks_uri,
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        })
    }
}

// === impl Ring ===

impl Ring {
    fn load_or_create(
        storage: (Arc<dyn KeyStorage>, PathBuf),
        rotation: Option<Rotation>,
        now: i64,
    ) -> Result<Ring, String> {
        let (store, dir) = &storage;
        let mut keys = Vec::new();
        if let Some(bytes) = store.load(dir)? {
            let bad = || {
                format!(
                    "`{}` is unreadable; delete it to start over",
                    dir.join(KEYS_FILE).display()
                )
            };
            let stored: StoredKeys = serde_json::from_slice(&bytes).map_err(|_| bad())?;
            for key in stored.keys {
                let der = STANDARD.decode(key.pkcs8).map_err(|_| bad())?;
                keys.push(RingKey::from_pkcs8(der, key.created_at).ok_or_else(bad)?);
            }
        }
        keys.sort_by_key(|k| k.created_at);
        let mut ring = Ring {
            keys,
            rotation,
            storage: Some(storage.clone()),
        };
        if ring.keys.is_empty() {
            let key = store
                .generate()
                .and_then(|der| RingKey::from_pkcs8(der, now))
                .ok_or("cannot generate a key")?;
            ring.keys.push(key);
            ring.save()
                .map_err(|e| format!("cannot use `{}`: {e}", dir.display()))?;
        }
        Ok(ring)
    }

    /// When `keys[i]` starts signing: the first key at once, a successor `publish_ahead` after it was made.
    fn signs_from(&self, i: usize) -> i64 {
        match (i, self.rotation) {
            (0, _) => i64::MIN,
            (_, Some(r)) => self.keys[i].created_at.saturating_add(r.publish_ahead),
            (_, None) => self.keys[i].created_at,
        }
    }

    /// The newest key that may sign now.
    fn signer(&self, now: i64) -> Option<&RingKey> {
        (0..self.keys.len())
            .rev()
            .find(|&i| self.signs_from(i) <= now)
            .map(|i| &self.keys[i])
    }

    /// Keys still published: those that sign or will, and those whose successor took over less than `ttl`
    /// ago.
    fn published(&self, now: i64, ttl: i64) -> impl Iterator<Item = &RingKey> {
        (0..self.keys.len())
            .filter(move |&i| {
                i + 1 == self.keys.len() || now < self.signs_from(i + 1).saturating_add(ttl)
            })
            .map(|i| &self.keys[i])
    }

    /// Rotates when the newest key is `every` old; drops keys no longer published. The state file is
    /// rewritten when anything changed (a failure is logged: the keys in memory still work).
    fn refresh(&mut self, now: i64) {
        let Some(rotation) = self.rotation else {
            return;
        };
        let mut changed = false;
        let newest = self.keys.last().map_or(i64::MIN, |k| k.created_at);
        if now >= newest.saturating_add(rotation.every) {
            let generated = self
                .storage
                .as_ref()
                .and_then(|(store, _)| store.generate())
                .and_then(|der| RingKey::from_pkcs8(der, now));
            match generated {
                Some(key) => {
                    self.keys.push(key);
                    changed = true;
                }
                None => tracing::error!("cannot generate a new identity token key"),
            }
        }
        while self.keys.len() > 1 && now >= self.signs_from(1).saturating_add(rotation.ttl) {
            self.keys.remove(0);
            changed = true;
        }
        if changed {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "cannot save the identity token keys");
            }
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let Some((store, dir)) = &self.storage else {
            return Ok(());
        };
        let stored = StoredKeys {
            keys: self
                .keys
                .iter()
                .map(|k| StoredKey {
                    created_at: k.created_at,
                    pkcs8: STANDARD.encode(&k.pkcs8),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        store.save(dir, &bytes)
    }
}

// === impl RingKey ===

impl RingKey {
    fn from_pkcs8(pkcs8: Vec<u8>, created_at: i64) -> Option<RingKey> {
        let encoding = EncodingKey::from_ec_der(&pkcs8);
        // Parses the key (a P-256 private key, or nothing) and gives its public point.
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, Algorithm::ES256).ok()?;
        let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
            return None;
        };
        if ec.curve != jsonwebtoken::jwk::EllipticCurve::P256 {
            return None;
        }
        let (x, y) = (ec.x.clone(), ec.y.clone());
        // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid: Arc<str> = URL_SAFE_NO_PAD
            .encode(Sha256::digest(thumbprint.as_bytes()))
            .into();
        Some(RingKey {
            jwk: json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y,
                "kid": &*kid, "alg": "ES256", "use": "sig",
            }),
            kid,
            encoding,
            created_at,
            pkcs8,
        })
    }
}

/// The DER inside a PEM `PRIVATE KEY` block.
fn pkcs8_from_pem(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body = text
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)?
        .split("-----END PRIVATE KEY-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

#[cfg(all(test, feature = "aws-lc-rs"))]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::config::{MemoryFiles, Sources};

    /// Keys kept in memory, generated with aws-lc-rs.
    #[derive(Default)]
    struct MemoryKeys(Mutex<Option<Vec<u8>>>);

    impl KeyStorage for MemoryKeys {
        fn load(&self, _: &Path) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.lock().unwrap().clone())
        }

        fn save(&self, _: &Path, document: &[u8]) -> std::io::Result<()> {
            *self.0.lock().unwrap() = Some(document.to_vec());
            Ok(())
        }

        fn generate(&self) -> Option<Vec<u8>> {
            use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
            Some(pair.to_pkcs8v1().ok()?.as_ref().to_vec())
        }
    }

    fn env(clock: Clock, keys: &Arc<MemoryKeys>, files: MemoryFiles) -> Env {
        Env::new(
            clock,
            Sources::new(Arc::new(files)),
            Arc::new(crate::env::NoUpstream),
            Arc::clone(keys) as Arc<dyn KeyStorage>,
        )
    }

    fn config(extra: &str) -> IdentityTokenConfig {
        serde_yaml_ng::from_str(&format!(
            "{{issuer: 'https://portcullis.test', audience: upstream, state_dir: /state {extra}}}"
        ))
        .unwrap()
    }

    fn kids(tokens: &IdentityTokens) -> Vec<String> {
        tokens.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_generated_key_is_stored_and_used_again() {
        let keys = Arc::new(MemoryKeys::default());
        let cfg = config("");
        let first = IdentityTokens::build(
            &cfg,
            &env(Clock::manual(1_000), &keys, MemoryFiles::default()),
        )
        .unwrap();
        assert!(keys.0.lock().unwrap().is_some(), "the new key was stored");
        let again = IdentityTokens::build(
            &cfg,
            &env(Clock::manual(2_000), &keys, MemoryFiles::default()),
        )
        .unwrap();
        assert_eq!(kids(&first), kids(&again));
        assert_eq!(kids(&first).len(), 1);
    }

    #[test]
    fn rotation_publishes_before_signing_and_keeps_the_old_key_until_its_tokens_expire() {
        let keys = Arc::new(MemoryKeys::default());
        let cfg = config(
            ", ttl_seconds: 60, rotation: {every_seconds: 1000, publish_ahead_seconds: 100}",
        );
        let clock = Clock::manual(10_000);
        let tokens =
            IdentityTokens::build(&cfg, &env(clock.clone(), &keys, MemoryFiles::default()))
                .unwrap();
        let signer = |t: &IdentityTokens| {
            let ring = t.ring.read().unwrap();
            ring.signer(t.clock.now()).unwrap().kid.to_string()
        };
        let old = kids(&tokens);
        assert_eq!(old.len(), 1);
        let old = old[0].clone();
        // Rotation time: the new key is published at once, the old one still signs.
        clock.set(11_000);
        let both = kids(&tokens);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], old);
        let new = both[1].clone();
        assert_eq!(signer(&tokens), old);
        // publish_ahead later the new key signs; the old stays published for ttl more.
        clock.set(11_100);
        assert_eq!(signer(&tokens), new);
        clock.set(11_159);
        assert_eq!(kids(&tokens), [old.clone(), new.clone()]);
        clock.set(11_160);
        assert_eq!(kids(&tokens), vec![new.clone()]);
        // The rotated ring survives a restart.
        let again = IdentityTokens::build(&cfg, &env(clock.clone(), &keys, MemoryFiles::default()))
            .unwrap();
        assert_eq!(kids(&again), [new]);
    }

    #[test]
    fn a_bad_signing_key_names_its_field() {
        let files = MemoryFiles {
            files: [(
                "/key.pem".into(),
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            )]
            .into(),
            ..MemoryFiles::default()
        };
        let cfg = config(", signing_key: {file: /key.pem}");
        let keys = Arc::new(MemoryKeys::default());
        let err = IdentityTokens::build(&cfg, &env(Clock::manual(1), &keys, files)).unwrap_err();
        assert_eq!(err.path, "identity_token.signing_key");
    }
}
