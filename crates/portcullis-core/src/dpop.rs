//! Sender-constrained access tokens (DPoP, RFC 9449): the rules of a provider's `dpop` mode, the proof
//! check of §4.3, the token binding of §6.1 (`cnf.jkt`) and the replay cache of §11.1.
//!
//! A provider calls [`Dpop::check`] once per request, after the token was authenticated (by signature,
//! introspection, or from the verified-token cache) and before its identity is used, so a cached bound
//! token never passes without a fresh proof. Every failure is a credential denial: 401 with
//! `WWW-Authenticate: DPoP algs="…", error="invalid_dpop_proof"` (or `invalid_token`, or
//! `use_dpop_nonce` with a fresh `DPoP-Nonce`).
//!
//! # Parts
//! - `proof`: one proof JWT: header, key, signature, claims; the RFC 7638 thumbprint.
//! - `htu`: the request URI rebuilt and normalised (RFC 3986 §6.2.2–6.2.3).
//! - `nonce`: stateless server nonces (HMAC of a time window).
//! - `replay`: the bounded `jti` cache, keyed by a digest.

mod htu;
mod nonce;
pub mod proof;
mod replay;

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

pub use self::replay::{ReplayCache, ReplayUnavailable, SharedSeen};

use self::nonce::Nonces;
use self::proof::{Expected, Proof, ProofError};
use crate::clock::Clock;
use crate::config::dpop::{DpopConfig, DpopMode};
use crate::config::Secret;
use crate::decision::{DenyReason, DpopChallenge, Unavailable};
use crate::request::RequestView;

/// The request header carrying the proof (RFC 9449 §4.1).
pub const PROOF_HEADER: &str = "dpop";

/// How the access token came: `Authorization: Bearer` (or any non-DPoP location) or `Authorization: DPoP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// Why a request fails DPoP: a credential denial, or the replay store cannot tell (never an allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rejected(DenyReason),
    Unavailable(Unavailable),
}

/// One provider's DPoP rules, built once at start.
#[derive(Debug)]
pub struct Dpop {
    mode: DpopMode,
    allowed: Box<[Algorithm]>,
    /// `allowed` space-separated, for the challenge's `algs`.
    algs: Arc<str>,
    max_age: i64,
    nonces: Option<Nonces>,
    external_origin: Option<Box<str>>,
    replay: Arc<ReplayCache>,
    clock: Clock,
    /// The provider configured `dpop:` itself: its challenges advertise the scheme.
    advertised: bool,
    /// After a reload that raised `max_age_seconds`: when, and the window before it. A proof issued before
    /// the reload may have been seen under the old window, whose record lasts only that long, so such a
    /// proof is held to the old window (a replay of it is never outside every record).
    earlier_window: Option<(i64, i64)>,
}

// === impl Dpop ===

impl Dpop {
    /// `nonce_secret` is the resolved `dpop.nonce_secret` (used with `nonce: true`). `advertised`: the
    /// provider's configuration has a `dpop` block.
    pub fn new(
        config: &DpopConfig,
        nonce_secret: Option<&Secret>,
        replay: Arc<ReplayCache>,
        clock: Clock,
        advertised: bool,
    ) -> Dpop {
        let allowed: Box<[Algorithm]> = config
            .algorithms
            .iter()
            .filter(|a| !a.is_hmac())
            .map(|a| a.algorithm())
            .collect();
        let algs = config
            .algorithms
            .iter()
            .filter(|a| !a.is_hmac())
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let max_age = i64::try_from(config.max_age_seconds).unwrap_or(300);
        Dpop {
            mode: config.mode,
            allowed,
            algs: algs.into(),
            max_age,
            nonces: match (config.nonce, nonce_secret) {
                (true, Some(secret)) => Some(Nonces::new(secret.expose(), max_age)),
                _ => None,
            },
            external_origin: config.external_origin.as_deref().map(Box::from),
            replay,
            clock,
            advertised,
            earlier_window: None,
        }
    }

    /// These rules replace `previous` on reload: when this window is longer, proofs issued before now keep
    /// the previous (shorter) window, for which their replay records were made.
    pub fn after(mut self, previous: &Dpop) -> Dpop {
        let narrower = match previous.earlier_window {
            Some((at, window)) => Some((at, window.min(previous.max_age))),
            None => Some((self.clock.now(), previous.max_age)),
        };
        self.earlier_window = narrower.filter(|&(_, window)| window < self.max_age);
        self
    }

    /// Whether challenges should name the `DPoP` scheme (a `dpop` block is configured and not `off`).
    pub fn advertised(&self) -> bool {
        self.advertised && self.mode != DpopMode::Off
    }

    /// The challenge parameters of a denial: `algs`, and with `fresh_nonce` a new `DPoP-Nonce`.
    pub fn challenge(&self, fresh_nonce: bool) -> DpopChallenge {
        DpopChallenge {
            algs: Arc::clone(&self.algs),
            nonce: match (&self.nonces, fresh_nonce) {
                (Some(nonces), true) => Some(nonces.issue(self.clock.now()).into()),
                _ => None,
            },
        }
    }

    /// Checks an authenticated token: `token` as it came with `scheme`, `claims` what its verification
    /// found (a JWT's payload, an introspection answer). With the DPoP scheme the proof is verified
    /// (§4.3), bound to the token's `cnf.jkt` (§6.1) and recorded against replay (§11.1); a bound token
    /// never passes as `Bearer` (§7.2); in `required` mode nothing else passes; in `off` mode the scheme
    /// is refused.
    pub async fn check(
        &self,
        request: &RequestView<'_>,
        token: &str,
        scheme: Scheme,
        claims: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let reject = |r| Err(Refusal::Rejected(r));
        let jkt = claims
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str);
        // A `cnf` that is there but names no `jkt` we understand is still a binding we cannot prove.
        let bound = jkt.is_some() || claims.get("cnf").is_some_and(|c| c.get("jkt").is_some());
        match scheme {
            Scheme::Bearer if bound => return reject(DenyReason::DpopBearerDowngrade),
            Scheme::Bearer if self.mode == DpopMode::Required => {
                return reject(DenyReason::DpopRequired)
            }
            Scheme::Bearer => return Ok(()),
            Scheme::Dpop if self.mode == DpopMode::Off => {
                return reject(DenyReason::DpopSchemeRefused)
            }
            Scheme::Dpop => {}
        }
        let proof = self
            .verify_proof(request, token)
            .map_err(Refusal::Rejected)?;
        let Some(jkt) = jkt else {
            return reject(DenyReason::DpopTokenUnbound);
        };
        if proof.jkt != jkt {
            return reject(DenyReason::DpopKeyMismatch);
        }
        // A proof that could have been accepted before the reload (its `iat` up to the future leeway
        // after it) may have a record made for the old window, which is gone once `iat + window` has
        // passed: such a proof is refused from then on.
        if let Some((reloaded_at, window)) = self.earlier_window {
            if proof.iat <= reloaded_at.saturating_add(proof::FUTURE_LEEWAY_SECONDS)
                && proof.iat <= self.clock.now() - window
            {
                return reject(DenyReason::DpopProofStale);
            }
        }
        let remember_until = proof.iat.max(self.clock.now()) + self.max_age;
        match self
            .replay
            .first_use(proof.replay_key, remember_until)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => reject(DenyReason::DpopProofReplayed),
            Err(ReplayUnavailable) => Err(Refusal::Unavailable(Unavailable::ReplayProtection)),
        }
    }

    /// Exactly one `DPoP` header holding one JWT, whose own checks pass.
    fn verify_proof(&self, request: &RequestView<'_>, token: &str) -> Result<Proof, DenyReason> {
        let headers = request.headers;
        let jwt = match headers.get(PROOF_HEADER) {
            None => return Err(DenyReason::DpopProofMissing),
            // Envoy joins repeated headers with `,`, which no compact JWS contains.
            Some(_) if headers.count(PROOF_HEADER) != 1 => {
                return Err(DenyReason::DpopProofMalformed)
            }
            Some(v) => v.trim_matches([' ', '\t']),
        };
        let jws_shaped = jwt.bytes().filter(|&b| b == b'.').count() == 2
            && jwt
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !jws_shaped {
            return Err(DenyReason::DpopProofMalformed);
        }
        let uri = htu::request_uri(
            request.scheme,
            request.host,
            request.path,
            self.external_origin.as_deref(),
        )
        .ok_or(DenyReason::DpopProofUri)?;
        let now = self.clock.now();
        let accepts = |nonce: &str| self.nonces.as_ref().is_some_and(|n| n.accepts(nonce, now));
        let expected = Expected {
            allowed: &self.allowed,
            method: request.method,
            uri: &uri,
            access_token: token,
            now,
            max_age: self.max_age,
            nonce: self
                .nonces
                .is_some()
                .then_some(&accepts as &dyn Fn(&str) -> bool),
        };
        proof::verify(jwt, &expected).map_err(|e| match e {
            ProofError::Malformed => DenyReason::DpopProofMalformed,
            ProofError::WrongType => DenyReason::DpopProofType,
            ProofError::AlgorithmNotAllowed => DenyReason::DpopProofAlgorithm,
            ProofError::BadKey => DenyReason::DpopProofKey,
            ProofError::BadSignature => DenyReason::DpopProofSignature,
            ProofError::WrongMethod => DenyReason::DpopProofMethod,
            ProofError::WrongUri => DenyReason::DpopProofUri,
            ProofError::Stale => DenyReason::DpopProofStale,
            ProofError::WrongTokenHash => DenyReason::DpopProofTokenHash,
            ProofError::Nonce => DenyReason::DpopNonceRequired,
        })
    }
}

/// Whether claims bind the token to a DPoP key (`cnf.jkt`, RFC 9449 §6).
pub fn is_bound(claims: &Map<String, Value>) -> bool {
    claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(Value::as_str)
        .is_some()
}
