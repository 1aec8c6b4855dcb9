//! The embedded development issuer behind `serve --dev` and `token`: an ES256 key made when `serve --dev`
//! first starts and kept in a small state directory (`.portcullis-dev/` by default), so that `portcullis
//! token` pointed at the same directory mints tokens the dev server accepts. `token` only reads that
//! directory: a key it made itself would sign tokens every dev server refuses (`unknown_kid`). The discovery
//! document and key set are served on the admin port, and the dev server's `jwt` provider fetches them from
//! there like from any other IdP.
//!
//! Also the one-off issuer behind `token --iss`: a key made for one run, for a token another configuration's
//! provider accepts once it is given the key set (`explain --jwks`).
//!
//! Development only: the key sits unencrypted on disk (mode 0600).

use std::fs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, RsaEncoding, RsaKeyPair,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{
    AlgorithmName, Config, HeadersConfig, JwksSettings, JwtProviderConfig, ProviderConfig,
    ProviderKind, ServerConfig, TokenCacheSettings,
};

/// The audience of dev tokens.
pub const DEV_AUDIENCE: &str = "portcullis-dev";
/// The dev server's default ports: loopback only.
pub const DEV_LISTEN: &str = "127.0.0.1:9001";
pub const DEV_ADMIN_LISTEN: &str = "127.0.0.1:9002";
/// Where `serve --dev` keeps its state unless told otherwise, relative to its working directory.
pub const DEFAULT_STATE_DIR: &str = ".portcullis-dev";
/// The environment variable that names the state directory for `serve --dev` and `token`.
pub const STATE_DIR_ENV: &str = "PORTCULLIS_DEV_STATE";

const KEY_FILE: &str = "signing-key.p8";
const STATE_FILE: &str = "dev.json";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot use the dev state directory `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dev signing key in `{0}` is unreadable; delete the directory to make a new one")]
    BadKey(PathBuf),
    #[error("the dev state file `{0}` is unreadable; delete the directory to start over")]
    BadState(PathBuf),
    #[error("could not generate a key")]
    KeyGeneration,
    #[error("could not sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("no dev signing key in `{0}`")]
    NoState(PathBuf),
    #[error(
        "`{0}` is not a JSON Web Key Set (`{{\"keys\": [...]}}`); name a new file or a key set"
    )]
    NotAKeySet(PathBuf),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    issuer: String,
}

/// The dev issuer: its key and identity.
pub struct DevIssuer {
    dir: PathBuf,
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    x: String,
    y: String,
}

/// The issuer URL for an admin address: the dev key set is served under `/dev` on the admin port.
pub fn issuer_for(admin: SocketAddr) -> String {
    let host = if admin.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        match admin {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("http://{host}:{}/dev", admin.port())
}

// === impl DevIssuer ===

impl DevIssuer {
    /// Opens the state directory, making the key (and the directory) on first use. `default_issuer` is used
    /// when no state file exists yet. For `serve --dev`, which owns the state.
    pub fn load_or_create(dir: &Path, default_issuer: &str) -> Result<DevIssuer, DevError> {
        let io = |source| DevError::Io {
            path: dir.to_owned(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let key_path = dir.join(KEY_FILE);
        let pkcs8 = match fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| DevError::KeyGeneration)?;
                let doc = key.to_pkcs8v1().map_err(|_| DevError::KeyGeneration)?;
                write_private(&key_path, doc.as_ref()).map_err(io)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let issuer_dev = DevIssuer::from_parts(dir, &pkcs8, default_issuer)?;
        issuer_dev.save()?;
        Ok(issuer_dev)
    }

    /// Opens the state a dev server made, writing nothing: [`DevError::NoState`] when the directory holds
    /// no key. For `token`, which must sign with the dev server's own key or not at all.
    pub fn open(dir: &Path) -> Result<DevIssuer, DevError> {
        let key_path = dir.join(KEY_FILE);
        let pkcs8 = match fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DevError::NoState(dir.to_owned()))
            }
            Err(source) => {
                return Err(DevError::Io {
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        let default_issuer = issuer_for(DEV_ADMIN_LISTEN.parse().expect("valid"));
        DevIssuer::from_parts(dir, &pkcs8, &default_issuer)
    }

    /// The issuer of the key in `pkcs8`, as the state file in `dir` records it (`default_issuer` without one).
    fn from_parts(dir: &Path, pkcs8: &[u8], default_issuer: &str) -> Result<DevIssuer, DevError> {
        let key_path = dir.join(KEY_FILE);
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| DevError::BadKey(key_path.clone()))?;
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(DevError::BadKey(key_path));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let kid = ec_thumbprint("P-256", &x, &y);

        let state_path = dir.join(STATE_FILE);
        let issuer = match fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes)
                    .map_err(|_| DevError::BadState(state_path.clone()))?
                    .issuer
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => default_issuer.to_owned(),
            Err(source) => {
                return Err(DevError::Io {
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        Ok(DevIssuer {
            dir: dir.to_owned(),
            issuer,
            kid,
            encoding: EncodingKey::from_ec_der(pkcs8),
            x,
            y,
        })
    }

    /// Changes the issuer (the dev server's admin address decides it) and records it for `token`.
    pub fn set_issuer(&mut self, issuer: String) -> Result<(), DevError> {
        self.issuer = issuer;
        self.save()
    }

    fn save(&self) -> Result<(), DevError> {
        let body = serde_json::to_vec_pretty(&State {
            issuer: self.issuer.clone(),
        })
        .expect("state serializes");
        write_private(&self.dir.join(STATE_FILE), &body).map_err(|source| DevError::Io {
            path: self.dir.clone(),
            source,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key set, as served at `/dev/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// The public key (a JWK with its `kid` and `alg`).
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "alg": "ES256", "use": "sig",
        })
    }

    /// The OIDC discovery document, as served at `/dev/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer),
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        })
    }

    /// Mints an access token (RFC 9068 shape) with these claims, this issuer and the dev key (ES256).
    pub fn mint(&self, token: TokenClaims<'_>) -> Result<String, DevError> {
        let claims = token.into_claims(&self.issuer);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The embedded default configuration: one `jwt` provider, this issuer, its key set fetched from the
    /// admin port.
    pub fn config(&self, listen: SocketAddr, admin_listen: SocketAddr) -> Config {
        let mut fetch_from = admin_listen;
        if fetch_from.ip().is_unspecified() {
            fetch_from.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Config {
            identity_token: None,
            server: ServerConfig {
                listen,
                admin_listen,
                drain_seconds: 0,
                allow_explain: true,
                ..ServerConfig::default()
            },
            decision_log: Default::default(),
            realm: "portcullis-dev".to_owned(),
            policy: Default::default(),
            resources: Vec::new(),
            headers: HeadersConfig::default(),
            answers: Default::default(),
            providers: vec![ProviderConfig {
                name: "dev".to_owned(),
                credential: Default::default(),
                claims_mapping: Default::default(),
                deny_message: None,
                shared_location_order: false,
                kind: ProviderKind::Jwt(JwtProviderConfig {
                    issuer: self.issuer.clone(),
                    audiences: vec![DEV_AUDIENCE.to_owned()],
                    jwks_uri: Some(format!("http://{fetch_from}/dev/jwks.json")),
                    jwks_file: None,
                    algorithms: vec![AlgorithmName::ES256],
                    shared_secret: None,
                    leeway_seconds: 30,
                    max_token_bytes: 8192,
                    required_typ: None,
                    claim_headers: [
                        ("email".to_owned(), "x-auth-email".to_owned()),
                        ("permissions".to_owned(), "x-auth-permissions".to_owned()),
                    ]
                    .into(),
                    jwks: JwksSettings {
                        refresh_seconds: 3600,
                        min_refresh_seconds: 1,
                        ..JwksSettings::default()
                    },
                    cache: TokenCacheSettings::default(),
                    tls: Default::default(),
                    dangerous_allow_plain_http: true,
                    dpop: None,
                    machine_subject_suffix: None,
                }),
            }],
            revocation: Default::default(),
            state: Default::default(),
        }
    }
}

/// The claims of a minted access token, apart from `iss`.
pub struct TokenClaims<'a> {
    pub sub: &'a str,
    /// Space-separated; no `scope` claim when blank.
    pub scopes: &'a str,
    pub audience: &'a str,
    pub ttl_seconds: i64,
    /// Unix seconds: `iat`, and `exp` is `ttl_seconds` later.
    pub now: i64,
    /// Any other claims; the ones above win over a claim of the same name here.
    pub extra: Map<String, Value>,
}

// === impl TokenClaims ===

impl TokenClaims<'_> {
    fn into_claims(self, issuer: &str) -> Map<String, Value> {
        let mut claims = self.extra;
        claims.insert("iss".into(), json!(issuer));
        claims.insert("sub".into(), json!(self.sub));
        claims.insert("aud".into(), json!(self.audience));
        claims.insert("iat".into(), json!(self.now));
        claims.insert("exp".into(), json!(self.now + self.ttl_seconds));
        if !self.scopes.trim().is_empty() {
            claims.insert(
                "scope".into(),
                json!(self.scopes.split_whitespace().collect::<Vec<_>>().join(" ")),
            );
        }
        claims
    }
}

/// The algorithms `token --iss` signs with: the asymmetric ones a `jwt` provider's `algorithms` can list
/// (HMAC needs the provider's own shared secret, EdDSA is left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "RS384")]
    Rs384,
    #[value(name = "RS512")]
    Rs512,
    #[value(name = "PS256")]
    Ps256,
    #[value(name = "PS384")]
    Ps384,
    #[value(name = "PS512")]
    Ps512,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "ES384")]
    Es384,
}

// === impl TokenAlgorithm ===

impl TokenAlgorithm {
    /// The JWS `alg` name (RFC 7518 §3.1).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::Rs256 => "RS256",
            TokenAlgorithm::Rs384 => "RS384",
            TokenAlgorithm::Rs512 => "RS512",
            TokenAlgorithm::Ps256 => "PS256",
            TokenAlgorithm::Ps384 => "PS384",
            TokenAlgorithm::Ps512 => "PS512",
            TokenAlgorithm::Es256 => "ES256",
            TokenAlgorithm::Es384 => "ES384",
        }
    }

    fn rsa_encoding(self) -> Option<&'static dyn RsaEncoding> {
        use aws_lc_rs::signature as s;
        Some(match self {
            TokenAlgorithm::Rs256 => &s::RSA_PKCS1_SHA256,
            TokenAlgorithm::Rs384 => &s::RSA_PKCS1_SHA384,
            TokenAlgorithm::Rs512 => &s::RSA_PKCS1_SHA512,
            TokenAlgorithm::Ps256 => &s::RSA_PSS_SHA256,
            TokenAlgorithm::Ps384 => &s::RSA_PSS_SHA384,
            TokenAlgorithm::Ps512 => &s::RSA_PSS_SHA512,
            TokenAlgorithm::Es256 | TokenAlgorithm::Es384 => return None,
        })
    }

    /// The curve name (RFC 7518 §6.2.1.1) and signing algorithm of an ECDSA `alg`.
    fn curve(self) -> Option<(&'static str, &'static EcdsaSigningAlgorithm)> {
        match self {
            TokenAlgorithm::Es256 => Some(("P-256", &ECDSA_P256_SHA256_FIXED_SIGNING)),
            TokenAlgorithm::Es384 => Some(("P-384", &ECDSA_P384_SHA384_FIXED_SIGNING)),
            _ => None,
        }
    }
}

/// A key made for one `token --iss` run, never stored: its public key set (written with `--write-jwks`) is
/// the only way to verify what it signs, so a configuration's provider can be tried offline with
/// `explain --jwks` without that provider's IdP.
pub struct OneOffIssuer {
    issuer: String,
    alg: TokenAlgorithm,
    key: OneOffKey,
    jwk: Value,
}

enum OneOffKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

// === impl OneOffIssuer ===

impl OneOffIssuer {
    /// Makes a key for `alg` (RSA 2048 bits, or the curve of an ECDSA `alg`).
    pub fn generate(issuer: &str, alg: TokenAlgorithm) -> Result<OneOffIssuer, DevError> {
        let (key, mut jwk) = if let Some((crv, signing)) = alg.curve() {
            let pair = EcdsaKeyPair::generate(signing).map_err(|_| DevError::KeyGeneration)?;
            // An uncompressed point: 0x04, x, y.
            let point = pair.public_key().as_ref();
            let half = (point.len() - 1) / 2;
            let x = URL_SAFE_NO_PAD.encode(&point[1..=half]);
            let y = URL_SAFE_NO_PAD.encode(&point[1 + half..]);
            let kid = ec_thumbprint(crv, &x, &y);
            let jwk = json!({"kty": "EC", "crv": crv, "x": x, "y": y, "kid": kid});
            (OneOffKey::Ec(pair), jwk)
        } else {
            let pair =
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| DevError::KeyGeneration)?;
            let public = pair.public_key();
            let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
            let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
            // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
            let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
            let jwk = json!({"kty": "RSA", "n": n, "e": e, "kid": kid});
            (OneOffKey::Rsa(pair), jwk)
        };
        jwk["alg"] = json!(alg.as_str());
        jwk["use"] = json!("sig");
        Ok(OneOffIssuer {
            issuer: issuer.to_owned(),
            alg,
            key,
            jwk,
        })
    }

    /// The public key (a JWK with its `kid` and `alg`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Mints an access token (RFC 9068 shape) with these claims, this issuer and this key.
    pub fn mint(&self, token: TokenClaims<'_>) -> Result<String, DevError> {
        let claims = token.into_claims(&self.issuer);
        let header = json!({"alg": self.alg.as_str(), "typ": "at+jwt", "kid": self.jwk["kid"]});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.key {
            OneOffKey::Rsa(pair) => {
                let encoding = self.alg.rsa_encoding().expect("an RSA key has an RSA alg");
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(encoding, &rng, input.as_bytes(), &mut signature)
                    .map_err(|_| DevError::KeyGeneration)?;
                signature
            }
            // The fixed-length r || s form JWS uses (RFC 7518 §3.4).
            OneOffKey::Ec(pair) => pair
                .sign(&rng, input.as_bytes())
                .map_err(|_| DevError::KeyGeneration)?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Adds `jwk` to the key set in `path`, making the file when it does not exist and replacing a key with
/// the same `kid`, so tokens from several `token` runs verify against one file.
pub fn add_to_key_set(path: &Path, jwk: &Value) -> Result<(), DevError> {
    let io = |source| DevError::Io {
        path: path.to_owned(),
        source,
    };
    let mut keys = match fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|set| set.get("keys")?.as_array().cloned())
            .ok_or_else(|| DevError::NotAKeySet(path.to_owned()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    keys.retain(|key| key.get("kid") != jwk.get("kid"));
    keys.push(jwk.clone());
    let mut body = serde_json::to_vec_pretty(&json!({ "keys": keys })).expect("serializes");
    body.push(b'\n');
    fs::write(path, body).map_err(io)
}

/// The RFC 7638 thumbprint of an EC public key, as a `kid`.
fn ec_thumbprint(crv: &str, x: &str, y: &str) -> String {
    let input = format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes()))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

use crate::io::write_private;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopening_and_issuer_follows_the_admin_port() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut first = DevIssuer::load_or_create(&state, "http://127.0.0.1:9002/dev").unwrap();
        first
            .set_issuer(issuer_for("0.0.0.0:7002".parse().unwrap()))
            .unwrap();
        let again = DevIssuer::load_or_create(&state, "ignored").unwrap();
        assert_eq!(again.issuer(), "http://127.0.0.1:7002/dev");
        assert_eq!(again.jwks(), first.jwks(), "the key is kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(state.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn open_reads_a_dev_servers_state_and_never_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(matches!(
            DevIssuer::open(&state),
            Err(DevError::NoState(path)) if path == state
        ));
        assert!(!state.exists(), "open made the directory");
        std::fs::create_dir(&state).unwrap();
        assert!(matches!(DevIssuer::open(&state), Err(DevError::NoState(_))));
        assert_eq!(
            std::fs::read_dir(&state).unwrap().count(),
            0,
            "open wrote a file"
        );

        let mut served = DevIssuer::load_or_create(&state, "http://127.0.0.1:9002/dev").unwrap();
        served
            .set_issuer("http://127.0.0.1:7002/dev".into())
            .unwrap();
        let opened = DevIssuer::open(&state).unwrap();
        assert_eq!(opened.jwks(), served.jwks());
        assert_eq!(opened.issuer(), "http://127.0.0.1:7002/dev");
    }

    /// Decodes `token` with `jwk` as jsonwebtoken would in a provider, for `alg` only.
    fn verify(token: &str, jwk: &Value, alg: Algorithm) -> Map<String, Value> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_audience(&["https://api.example.com/"]);
        validation.set_issuer(&["https://example.eu.auth0.com/"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn one_off_tokens_verify_with_their_key_set_for_each_algorithm() {
        for (alg, name) in [
            (TokenAlgorithm::Rs256, Algorithm::RS256),
            (TokenAlgorithm::Ps384, Algorithm::PS384),
            (TokenAlgorithm::Es256, Algorithm::ES256),
            (TokenAlgorithm::Es384, Algorithm::ES384),
        ] {
            let issuer = OneOffIssuer::generate("https://example.eu.auth0.com/", alg).unwrap();
            let token = issuer
                .mint(TokenClaims {
                    sub: "auth0|alice",
                    scopes: "read:x",
                    audience: "https://api.example.com/",
                    ttl_seconds: 600,
                    now: jsonwebtoken::get_current_timestamp() as i64,
                    extra: Map::new(),
                })
                .unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, name);
            assert_eq!(header.kid.as_deref(), issuer.jwk()["kid"].as_str());
            let claims = verify(&token, issuer.jwk(), name);
            assert_eq!(claims["sub"], "auth0|alice", "{alg:?}");
            assert_eq!(claims["scope"], "read:x");
        }
    }

    #[test]
    fn key_sets_gather_keys_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let a = OneOffIssuer::generate("i", TokenAlgorithm::Es256).unwrap();
        let b = OneOffIssuer::generate("i", TokenAlgorithm::Es256).unwrap();
        add_to_key_set(&path, a.jwk()).unwrap();
        add_to_key_set(&path, b.jwk()).unwrap();
        add_to_key_set(&path, a.jwk()).unwrap();
        let set: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(set["keys"].as_array().unwrap().len(), 2, "{set}");
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            add_to_key_set(&path, a.jwk()),
            Err(DevError::NotAKeySet(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not json", "left as it was");
    }

    #[test]
    fn issuer_uses_loopback_for_unspecified_addresses() {
        assert_eq!(
            issuer_for("[::]:9002".parse().unwrap()),
            "http://127.0.0.1:9002/dev"
        );
        assert_eq!(
            issuer_for("[::1]:9002".parse().unwrap()),
            "http://[::1]:9002/dev"
        );
    }
}
