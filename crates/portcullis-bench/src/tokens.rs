//! The bench's own key material: an RS256 signing key, its JWKS, a portcullis configuration that trusts
//! it, and the tokens the load generator sends (one hot token, distinct valid ones, bad-signature ones).
//!
//! Nothing here is logged: tokens go into the requests and, with `--setup-only`, into files readable by
//! their owner only.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://bench.portcullis.invalid/";
pub const AUDIENCE: &str = "https://api.bench.invalid/";
pub const KID: &str = "bench-rs256";
const KEY_FILE: &str = "bench-key.pk8";
/// Tokens live this long: long enough for any bench run, and for a reused `--keys-dir`.
const TOKEN_TTL: i64 = 6 * 3600;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Writes `contents` readable by the owner only (keys and tokens).
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

/// The directory the bench keeps its files in: `--keys-dir`, or a temporary one removed at the end.
pub struct WorkDir {
    pub path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    pub fn new(keys_dir: Option<&Path>) -> anyhow::Result<WorkDir> {
        let (path, temporary) = match keys_dir {
            Some(dir) => (dir.to_owned(), false),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos();
                let name = format!("portcullis-bench-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, temporary })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The signing key.
pub struct Keys {
    pair: KeyPair,
}

impl Keys {
    /// Loads the key kept in `dir`, or makes one and keeps it there.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Keys> {
        let path = dir.join(KEY_FILE);
        let pair = if path.exists() {
            let der = std::fs::read(&path)?;
            KeyPair::from_pkcs8(&der)
                .map_err(|e| anyhow::anyhow!("{} is not an RSA PKCS#8 key: {e}", path.display()))?
        } else {
            let pair = KeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
            let der = pair
                .as_der()
                .map_err(|_| anyhow::anyhow!("cannot encode the RSA key"))?;
            write_private(&path, der.as_ref())?;
            pair
        };
        Ok(Keys { pair })
    }

    /// The public key set (one RS256 key).
    pub fn jwks(&self) -> Value {
        let public = self.pair.public_key();
        json!({"keys": [{
            "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        }]})
    }

    fn header() -> String {
        b64(json!({"alg": "RS256", "kid": KID, "typ": "at+jwt"}).to_string())
    }

    fn sign(&self, message: &str) -> String {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing with a valid key");
        b64(sig)
    }

    /// A valid token for principal `n`.
    fn token(&self, n: usize, now: i64) -> String {
        let message = format!("{}.{}", Keys::header(), b64(claims(n, now).to_string()));
        let sig = self.sign(&message);
        format!("{message}.{sig}")
    }

    /// Mints the hot token, `distinct` more valid ones (signed on every core) and `bad` tokens whose
    /// signature is another token's: each distinct, each costing the server a full verification.
    pub fn tokens(&self, distinct: usize, bad: usize) -> Tokens {
        let now = now();
        let hot = self.token(0, now);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = distinct.div_ceil(threads).max(1);
        let distinct: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..distinct)
                .collect::<Vec<_>>()
                .chunks(chunk)
                .map(|ns| {
                    let ns = ns.to_vec();
                    scope.spawn(move || {
                        ns.into_iter()
                            .map(|n| self.token(n + 1, now))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("minting thread"))
                .collect()
        });
        let hot_sig = hot.rsplit('.').next().unwrap_or_default().to_owned();
        let header = Keys::header();
        let bad = (0..bad)
            .map(|n| {
                let payload = b64(claims(1_000_000 + n, now).to_string());
                format!("{header}.{payload}.{hot_sig}")
            })
            .collect();
        Tokens { hot, distinct, bad }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A realistic Auth0-style access token's claims (about 1 KiB once signed), distinct per `n`.
fn claims(n: usize, now: i64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("bench|user-{n}"),
        "iat": now - 10,
        "exp": now + TOKEN_TTL,
        "jti": format!("bench-{n}-{now}"),
        "scope": "read:data write:data",
        "email": format!("user{n}@bench.invalid"),
        "permissions": ["read:portfolio", "write:strategy", "deploy:strategy"],
        "https://bench.invalid/roles": ["trader"],
        "azp": "f3Kd9sQ2abcdefghijklmnop",
    })
}

/// The tokens a run sends.
pub struct Tokens {
    pub hot: String,
    pub distinct: Vec<String>,
    pub bad: Vec<String>,
}

impl Tokens {
    /// Writes `hot.token`, `distinct.tokens` and `bad.tokens` (one a line, owner-readable only).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_private(&dir.join("hot.token"), format!("{}\n", self.hot).as_bytes())?;
        let lines = |tokens: &[String]| tokens.iter().map(|t| format!("{t}\n")).collect::<String>();
        write_private(
            &dir.join("distinct.tokens"),
            lines(&self.distinct).as_bytes(),
        )?;
        write_private(&dir.join("bad.tokens"), lines(&self.bad).as_bytes())?;
        Ok(())
    }
}

/// Writes `jwks.json` and `portcullis.yaml` (a `jwt` provider trusting the bench key through
/// `jwks_file`, with `cache_entries` as its token cache size when given), after `validate` accepts the
/// configuration; returns the config's path.
pub fn write_server_files(
    dir: &Path,
    keys: &Keys,
    cache_entries: Option<u64>,
    http: bool,
    validate: super::ValidateConfig,
) -> anyhow::Result<PathBuf> {
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, keys.jwks().to_string())?;
    let cache = cache_entries
        .map(|n| format!("\n    cache: {{max_entries: {n}}}"))
        .unwrap_or_default();
    // The HTTP listener's address is given on the command line (`serve --http-listen`).
    let server = if http {
        "{drain_seconds: 0, http_listen: '127.0.0.1:0', http_mode: envoy}"
    } else {
        "{drain_seconds: 0}"
    };
    let yaml = format!(
        "# Written by `portcullis bench`: trusts the bench's own signing key.
server: {server}
providers:
  - name: bench
    type: jwt
    issuer: '{ISSUER}'
    audiences: ['{AUDIENCE}']
    algorithms: [RS256]
    jwks_file: '{}'
    claim_headers: {{email: x-auth-email}}{cache}
",
        jwks.display()
    );
    validate(&yaml)
        .map_err(|e| anyhow::anyhow!("the bench's own configuration is invalid: {e}"))?;
    let path = dir.join("portcullis.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_bad_ones_reuse_a_foreign_signature() {
        let dir = WorkDir::new(None).unwrap();
        let keys = Keys::load_or_create(&dir.path).unwrap();
        let tokens = keys.tokens(3, 2);
        let mut all = vec![tokens.hot.clone()];
        all.extend(tokens.distinct.iter().cloned());
        all.extend(tokens.bad.iter().cloned());
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 6);
        let sig = |t: &str| t.rsplit('.').next().unwrap().to_owned();
        assert_eq!(sig(&tokens.bad[0]), sig(&tokens.hot));
        assert_ne!(sig(&tokens.distinct[0]), sig(&tokens.hot));
        // The key is kept and reused.
        let again = Keys::load_or_create(&dir.path).unwrap();
        assert_eq!(again.jwks(), keys.jwks());
        let path = write_server_files(&dir.path, &keys, Some(0), true, |_| Ok(())).unwrap();
        let refused = write_server_files(&dir.path, &keys, None, false, |_| Err("no".to_owned()));
        assert!(refused.unwrap_err().to_string().contains("invalid: no"));
        assert!(std::fs::read_to_string(path)
            .unwrap()
            .contains("max_entries: 0"));
    }
}
