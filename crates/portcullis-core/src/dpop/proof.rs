//! One DPoP proof JWT (RFC 9449 §4.2), checked as §4.3 says: its header (`typ`, an allowed asymmetric
//! `alg`, a public `jwk` that verifies the signature) and its claims (`jti`, `htm`, `htu`, `iat`, `ath`,
//! `nonce`). What binds it to the access token (`cnf.jkt`) and its freshness (`jti` replay) are checked by
//! the caller.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Why a proof is refused; every one answers `invalid_dpop_proof` except [`ProofError::Nonce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// Not a compact JWS with JSON header and claims, a `crit` header, or no usable `jti`.
    Malformed,
    WrongType,
    AlgorithmNotAllowed,
    /// No `jwk`, a private key member in it, or one that does not fit `alg`.
    BadKey,
    BadSignature,
    WrongMethod,
    WrongUri,
    /// `iat` missing, not a number, too old or in the future.
    Stale,
    /// `ath` is not the hash of the access token.
    WrongTokenHash,
    /// No nonce, or not one of ours (answered with `use_dpop_nonce`).
    Nonce,
}

/// A proof whose own checks passed.
#[derive(Debug)]
pub struct Proof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key, base64url.
    pub jkt: String,
    /// SHA-256 of thumbprint and `jti`: the replay cache key.
    pub replay_key: [u8; 32],
    pub iat: i64,
}

/// What the proof must match.
pub struct Expected<'a> {
    pub allowed: &'a [Algorithm],
    pub method: &'a str,
    /// The normalised request URI.
    pub uri: &'a str,
    pub access_token: &'a str,
    pub now: i64,
    pub max_age: i64,
    /// `Some`: the proof's `nonce` must pass this.
    pub nonce: Option<&'a dyn Fn(&str) -> bool>,
}

/// How far in the future an `iat` may be (clock skew).
pub(super) const FUTURE_LEEWAY_SECONDS: i64 = 30;
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks a proof JWT.
pub fn verify(jwt: &str, expected: &Expected<'_>) -> Result<Proof, ProofError> {
    let (message, signature) = jwt.rsplit_once('.').ok_or(ProofError::Malformed)?;
    let (header, payload) = message.split_once('.').ok_or(ProofError::Malformed)?;
    let header = decode_object(header)?;
    let claims = decode_object(payload)?;

    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    if !typ.eq_ignore_ascii_case("dpop+jwt") {
        return Err(ProofError::WrongType);
    }
    if header.contains_key("crit") {
        return Err(ProofError::Malformed);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(algorithm)
        .filter(|a| expected.allowed.contains(a))
        .ok_or(ProofError::AlgorithmNotAllowed)?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(ProofError::BadKey);
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::BadKey);
    }
    let jkt = thumbprint(jwk, alg).ok_or(ProofError::BadKey)?;
    let key: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(Value::Object(jwk.clone())).map_err(|_| ProofError::BadKey)?;
    let key = DecodingKey::from_jwk(&key).map_err(|_| ProofError::BadKey)?;
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg) {
        Ok(true) => {}
        _ => return Err(ProofError::BadSignature),
    }

    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 512)
        .ok_or(ProofError::Malformed)?;
    if text("htm") != Some(expected.method) {
        return Err(ProofError::WrongMethod);
    }
    let htu = text("htu").and_then(super::htu::normalize);
    if htu.as_deref() != Some(expected.uri) {
        return Err(ProofError::WrongUri);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite())
        .ok_or(ProofError::Stale)? as i64;
    if iat < expected.now - expected.max_age || iat > expected.now + FUTURE_LEEWAY_SECONDS {
        return Err(ProofError::Stale);
    }
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(expected.access_token.as_bytes()));
    if text("ath") != Some(ath.as_str()) {
        return Err(ProofError::WrongTokenHash);
    }
    if let Some(accepts) = expected.nonce {
        if !text("nonce").is_some_and(accepts) {
            return Err(ProofError::Nonce);
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(jkt.as_bytes());
    hasher.update([0]);
    hasher.update(jti.as_bytes());
    Ok(Proof {
        jkt,
        replay_key: hasher.finalize().into(),
        iat,
    })
}

fn decode_object(part: &str) -> Result<Map<String, Value>, ProofError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK whose type fits `alg`: the required members in
/// lexicographic order, no whitespace. `None` when a member is missing or not a base64url string.
pub fn thumbprint(jwk: &Map<String, Value>, alg: Algorithm) -> Option<String> {
    let member = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let b64 = |name: &str| {
        member(name).filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    let kty = member("kty")?;
    let canonical = match (alg, kty) {
        (Algorithm::ES256 | Algorithm::ES384, "EC") => {
            let crv = member("crv")?;
            let want = if alg == Algorithm::ES256 {
                "P-256"
            } else {
                "P-384"
            };
            if crv != want {
                return None;
            }
            format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                b64("x")?,
                b64("y")?
            )
        }
        (Algorithm::EdDSA, "OKP") => {
            if member("crv")? != "Ed25519" {
                return None;
            }
            format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64("x")?)
        }
        (
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
            "RSA",
        ) => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64("e")?, b64("n")?),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(jwk.as_object().unwrap(), Algorithm::RS256).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        // The key type must fit the algorithm.
        assert_eq!(thumbprint(jwk.as_object().unwrap(), Algorithm::ES256), None);
    }
}
