//! The embedded development issuer behind `serve --dev` and `token`: an ES256 key made on first use and
//! kept in a small state directory (`.portcullis-dev/` by default), so that `portcullis token` run from the
//! same directory mints tokens the dev server accepts. Its discovery document and key set are served on the
//! admin port, and the dev server's `jwt` provider fetches them from there like from any other IdP.
//!
//! Development only: the key sits unencrypted on disk (mode 0600).

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
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
    /// when no state file exists yet.
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
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| DevError::BadKey(key_path.clone()))?;
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(DevError::BadKey(key_path));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        // RFC 7638 thumbprint as the kid.
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));

        let state_path = dir.join(STATE_FILE);
        let issuer = match fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes)
                    .map_err(|_| DevError::BadState(state_path.clone()))?
                    .issuer
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => default_issuer.to_owned(),
            Err(e) => return Err(io(e)),
        };
        let issuer_dev = DevIssuer {
            dir: dir.to_owned(),
            issuer,
            kid,
            encoding: EncodingKey::from_ec_der(&pkcs8),
            x,
            y,
        };
        issuer_dev.save()?;
        Ok(issuer_dev)
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
        json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "alg": "ES256", "use": "sig",
        }]})
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

    /// Mints an access token (RFC 9068 shape) for `sub` with the given scopes and extra claims.
    pub fn mint(
        &self,
        sub: &str,
        scopes: &str,
        audience: &str,
        ttl_seconds: i64,
        now: i64,
        extra: Map<String, Value>,
    ) -> Result<String, DevError> {
        let mut claims = extra;
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("sub".into(), json!(sub));
        claims.insert("aud".into(), json!(audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl_seconds));
        if !scopes.trim().is_empty() {
            claims.insert(
                "scope".into(),
                json!(scopes.split_whitespace().collect::<Vec<_>>().join(" ")),
            );
        }
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

/// Writes a file readable by its owner only, through a temporary file and a rename (the dev issuer's key,
/// and the identity token's generated keys).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)
}

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
