//! What a check decides: allow with an [`Identity`], deny with a [`Denial`], or an error when it cannot
//! decide. An expected denial is a value with a `Copy` reason, not an error: [`DenyReason`] for a
//! credential that failed, [`Unmet`] for a route requirement an identity does not meet.

use std::sync::Arc;

mod unmet;

pub use self::unmet::{Unmet, UnmetReason};
use crate::identity::Identity;

/// Why a request is denied. Each reason maps to a static metric label and a short description that is safe
/// to show to the client (it never carries token content or internal error text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No credential any provider could take.
    MissingCredential,
    EmptyCredential,
    MultipleCredentials,
    MalformedCredential,
    TokenTooLarge,
    /// Not a compact JWS with a JSON header and payload.
    MalformedToken,
    /// An opaque token, and no provider takes opaque tokens.
    NotAJwt,
    /// A JWS-shaped token where only opaque-token providers look: present, and understood by none.
    UnsupportedCredential,
    /// An `Authorization` credential (that scheme, or the header at all) that no provider of the route
    /// reads: refused rather than passed upstream unverified. RFC 6750 §3.1: an unsupported method gets a
    /// challenge without an error code.
    UnownedCredential,
    /// A header the policy reads (a route `match`, `organization.from_header`) arrived more than once.
    RepeatedHeader,
    /// More headers than `server.max_headers`: not looked at, refused (fail closed).
    TooManyHeaders,
    /// The path, read as an upstream may read it (case, `;` parameters, percent-encoding, trailing dots),
    /// would take another route than as sent.
    AmbiguousPath,
    /// A `sub` that is present but not a usable string (a number, control characters).
    InvalidSubject,
    AlgorithmNone,
    UnsupportedAlgorithm,
    /// The header's `alg` is not one the provider and the key accept.
    AlgorithmNotAllowed,
    UnsupportedCritical,
    WrongType,
    MissingIssuer,
    UntrustedIssuer,
    UnknownKey,
    /// No `kid`, and the key set has more than one key.
    MissingKeyId,
    BadSignature,
    MissingExpiry,
    Expired,
    NotYetValid,
    IssuedInFuture,
    /// A time claim that is not a JSON number.
    MalformedTimeClaim,
    WrongAudience,
    /// Introspection answered `active: false` (RFC 7662 §2.2).
    InactiveToken,
    /// A webhook or GitHub refused the credential.
    CredentialRejected,
    UnknownApiKey,
    /// The GitHub user is in none of the allowed organisations.
    OrganizationNotAllowed,
    /// The client certificate identity is outside the trusted domains or patterns.
    UntrustedPeer,
    /// A valid credential whose subject, token, session or client is on the denylist.
    Revoked,
    /// A token bound to a client certificate (`cnf.x5t#S256`, RFC 8705) over a connection without that
    /// certificate.
    CertificateBindingMismatch,
    /// RFC 9449: the `DPoP` scheme without a `DPoP` proof header.
    DpopProofMissing,
    /// Several `DPoP` headers, or not one compact JWS with JSON parts, `jti`, no `crit`.
    DpopProofMalformed,
    /// `typ` is not `dpop+jwt`.
    DpopProofType,
    /// `alg` not in the provider's `dpop.algorithms` (never a symmetric one).
    DpopProofAlgorithm,
    /// No public `jwk`, a private member in it, or one that does not fit `alg`.
    DpopProofKey,
    DpopProofSignature,
    /// `htm` is not the request method.
    DpopProofMethod,
    /// `htu` is not the request URI (normalised, without query and fragment).
    DpopProofUri,
    /// `iat` outside `max_age_seconds` (or ahead of the clock).
    DpopProofStale,
    /// `ath` is not base64url(SHA-256(access token)).
    DpopProofTokenHash,
    /// The proof's `jti` was seen before (RFC 9449 §11.1).
    DpopProofReplayed,
    /// The proof's key thumbprint is not the token's `cnf.jkt` (RFC 9449 §6.1).
    DpopKeyMismatch,
    /// `nonce: true` and the proof has no valid nonce: `use_dpop_nonce` (RFC 9449 §8).
    DpopNonceRequired,
    /// A token bound with `cnf.jkt` sent with the `Bearer` scheme (RFC 9449 §7.2).
    DpopBearerDowngrade,
    /// `dpop.mode: required`, and the token is not bound or not proven.
    DpopRequired,
    /// `dpop.mode: off`, and the `DPoP` scheme was used.
    DpopSchemeRefused,
    /// The `DPoP` scheme with a token that has no `cnf.jkt`.
    DpopTokenUnbound,
}

// === impl DenyReason ===

impl DenyReason {
    /// Every reason, for metrics.
    pub const ALL: &[DenyReason] = &[
        DenyReason::MissingCredential,
        DenyReason::EmptyCredential,
        DenyReason::MultipleCredentials,
        DenyReason::MalformedCredential,
        DenyReason::TokenTooLarge,
        DenyReason::MalformedToken,
        DenyReason::NotAJwt,
        DenyReason::UnsupportedCredential,
        DenyReason::UnownedCredential,
        DenyReason::RepeatedHeader,
        DenyReason::TooManyHeaders,
        DenyReason::AmbiguousPath,
        DenyReason::InvalidSubject,
        DenyReason::AlgorithmNone,
        DenyReason::UnsupportedAlgorithm,
        DenyReason::AlgorithmNotAllowed,
        DenyReason::UnsupportedCritical,
        DenyReason::WrongType,
        DenyReason::MissingIssuer,
        DenyReason::UntrustedIssuer,
        DenyReason::UnknownKey,
        DenyReason::MissingKeyId,
        DenyReason::BadSignature,
        DenyReason::MissingExpiry,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::IssuedInFuture,
        DenyReason::MalformedTimeClaim,
        DenyReason::WrongAudience,
        DenyReason::InactiveToken,
        DenyReason::CredentialRejected,
        DenyReason::UnknownApiKey,
        DenyReason::OrganizationNotAllowed,
        DenyReason::UntrustedPeer,
        DenyReason::Revoked,
        DenyReason::CertificateBindingMismatch,
        DenyReason::DpopProofMissing,
        DenyReason::DpopProofMalformed,
        DenyReason::DpopProofType,
        DenyReason::DpopProofAlgorithm,
        DenyReason::DpopProofKey,
        DenyReason::DpopProofSignature,
        DenyReason::DpopProofMethod,
        DenyReason::DpopProofUri,
        DenyReason::DpopProofStale,
        DenyReason::DpopProofTokenHash,
        DenyReason::DpopProofReplayed,
        DenyReason::DpopKeyMismatch,
        DenyReason::DpopNonceRequired,
        DenyReason::DpopBearerDowngrade,
        DenyReason::DpopRequired,
        DenyReason::DpopSchemeRefused,
        DenyReason::DpopTokenUnbound,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::MissingCredential => "missing_credential",
            DenyReason::EmptyCredential => "empty_credential",
            DenyReason::MultipleCredentials => "multiple_credentials",
            DenyReason::MalformedCredential => "malformed_credential",
            DenyReason::TokenTooLarge => "token_too_large",
            DenyReason::MalformedToken => "malformed_token",
            DenyReason::NotAJwt => "not_a_jwt",
            DenyReason::UnsupportedCredential => "unsupported_credential",
            DenyReason::UnownedCredential => "unowned_credential",
            DenyReason::RepeatedHeader => "repeated_header",
            DenyReason::TooManyHeaders => "too_many_headers",
            DenyReason::AmbiguousPath => "ambiguous_path",
            DenyReason::InvalidSubject => "invalid_sub",
            DenyReason::AlgorithmNone => "alg_none",
            DenyReason::UnsupportedAlgorithm => "unsupported_alg",
            DenyReason::AlgorithmNotAllowed => "alg_not_allowed",
            DenyReason::UnsupportedCritical => "unsupported_crit",
            DenyReason::WrongType => "wrong_typ",
            DenyReason::MissingIssuer => "missing_iss",
            DenyReason::UntrustedIssuer => "untrusted_iss",
            DenyReason::UnknownKey => "unknown_kid",
            DenyReason::MissingKeyId => "missing_kid",
            DenyReason::BadSignature => "bad_signature",
            DenyReason::MissingExpiry => "missing_exp",
            DenyReason::Expired => "expired",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::IssuedInFuture => "iat_in_future",
            DenyReason::MalformedTimeClaim => "malformed_time_claim",
            DenyReason::WrongAudience => "wrong_aud",
            DenyReason::InactiveToken => "inactive_token",
            DenyReason::CredentialRejected => "credential_rejected",
            DenyReason::UnknownApiKey => "unknown_api_key",
            DenyReason::OrganizationNotAllowed => "org_not_allowed",
            DenyReason::UntrustedPeer => "untrusted_peer",
            DenyReason::Revoked => "revoked",
            DenyReason::CertificateBindingMismatch => "certificate_binding_mismatch",
            DenyReason::DpopProofMissing => "dpop_proof_missing",
            DenyReason::DpopProofMalformed => "dpop_proof_malformed",
            DenyReason::DpopProofType => "dpop_proof_typ",
            DenyReason::DpopProofAlgorithm => "dpop_proof_alg",
            DenyReason::DpopProofKey => "dpop_proof_key",
            DenyReason::DpopProofSignature => "dpop_proof_signature",
            DenyReason::DpopProofMethod => "dpop_proof_htm",
            DenyReason::DpopProofUri => "dpop_proof_htu",
            DenyReason::DpopProofStale => "dpop_proof_iat",
            DenyReason::DpopProofTokenHash => "dpop_proof_ath",
            DenyReason::DpopProofReplayed => "dpop_proof_replayed",
            DenyReason::DpopKeyMismatch => "dpop_key_mismatch",
            DenyReason::DpopNonceRequired => "dpop_nonce",
            DenyReason::DpopBearerDowngrade => "dpop_bearer_downgrade",
            DenyReason::DpopRequired => "dpop_required",
            DenyReason::DpopSchemeRefused => "dpop_scheme_refused",
            DenyReason::DpopTokenUnbound => "dpop_token_unbound",
        }
    }

    /// The `error_description` shown to the client (RFC 6750 §3).
    pub fn description(self) -> &'static str {
        match self {
            DenyReason::MissingCredential => "authentication required",
            DenyReason::EmptyCredential => "the bearer token is empty",
            DenyReason::MultipleCredentials => "more than one credential was sent",
            DenyReason::MalformedCredential => "the bearer token has invalid characters",
            DenyReason::TokenTooLarge => "the token is too large",
            DenyReason::MalformedToken => "the token is malformed",
            DenyReason::NotAJwt => "the token is not a JWT",
            DenyReason::UnsupportedCredential => {
                "the credential is not of a kind this route accepts"
            }
            DenyReason::UnownedCredential => {
                "the Authorization credential is not one this route accepts"
            }
            DenyReason::RepeatedHeader => "a header the policy reads was sent more than once",
            DenyReason::TooManyHeaders => "the request has more headers than this service reads",
            DenyReason::AmbiguousPath => "the path is a variant of a path another route takes",
            DenyReason::InvalidSubject => "the token's subject is not usable",
            DenyReason::AlgorithmNone => "unsigned tokens are not accepted",
            DenyReason::UnsupportedAlgorithm => "the token's algorithm is not supported",
            DenyReason::AlgorithmNotAllowed => "the token's algorithm is not allowed",
            DenyReason::UnsupportedCritical => "the token has an unsupported critical header",
            DenyReason::WrongType => "the token has the wrong type",
            DenyReason::MissingIssuer => "the token has no issuer",
            DenyReason::UntrustedIssuer => "the token's issuer is not trusted",
            DenyReason::UnknownKey => "the token was signed with an unknown key",
            DenyReason::MissingKeyId => "the token has no key id",
            DenyReason::BadSignature => "the token's signature is invalid",
            DenyReason::MissingExpiry => "the token has no expiry",
            DenyReason::Expired => "the token has expired",
            DenyReason::NotYetValid => "the token is not valid yet",
            DenyReason::IssuedInFuture => "the token is issued in the future",
            DenyReason::MalformedTimeClaim => "the token has a malformed time claim",
            DenyReason::WrongAudience => "the token is not meant for this audience",
            DenyReason::InactiveToken => "the token is not active",
            DenyReason::CredentialRejected => "the credential was rejected",
            DenyReason::UnknownApiKey => "the API key is not valid",
            DenyReason::OrganizationNotAllowed => "the user is not in an allowed organization",
            DenyReason::UntrustedPeer => "the client certificate identity is not trusted",
            DenyReason::Revoked => "the token has been revoked",
            DenyReason::CertificateBindingMismatch => {
                "the token is bound to a client certificate this connection did not present"
            }
            DenyReason::DpopProofMissing => "the DPoP proof is missing",
            DenyReason::DpopProofMalformed => "the DPoP proof is malformed",
            DenyReason::DpopProofType => "the DPoP proof has the wrong type",
            DenyReason::DpopProofAlgorithm => "the DPoP proof's algorithm is not allowed",
            DenyReason::DpopProofKey => "the DPoP proof's key is not a usable public key",
            DenyReason::DpopProofSignature => "the DPoP proof's signature is invalid",
            DenyReason::DpopProofMethod => "the DPoP proof is for another method",
            DenyReason::DpopProofUri => "the DPoP proof is for another URI",
            DenyReason::DpopProofStale => "the DPoP proof is too old or not yet valid",
            DenyReason::DpopProofTokenHash => "the DPoP proof is for another access token",
            DenyReason::DpopProofReplayed => "the DPoP proof was already used",
            DenyReason::DpopKeyMismatch => "the DPoP proof's key is not the token's",
            DenyReason::DpopNonceRequired => "a DPoP nonce from this server is required",
            DenyReason::DpopBearerDowngrade => {
                "a DPoP-bound token must be sent with the DPoP scheme"
            }
            DenyReason::DpopRequired => "a DPoP-bound token and proof are required",
            DenyReason::DpopSchemeRefused => "the DPoP scheme is not accepted",
            DenyReason::DpopTokenUnbound => "the token is not bound to a DPoP key",
        }
    }

    /// The RFC 6750 §3.1 error code, or RFC 9449 §7.1's `invalid_dpop_proof` and §8's `use_dpop_nonce`.
    pub fn error_code(self) -> &'static str {
        if self.is_dpop_proof() {
            return "invalid_dpop_proof";
        }
        if self == DenyReason::DpopNonceRequired {
            return "use_dpop_nonce";
        }
        match self.status() {
            DenyStatus::BadRequest => "invalid_request",
            DenyStatus::Unauthorized => "invalid_token",
        }
    }

    /// A reason about the DPoP proof itself (`invalid_dpop_proof`).
    pub fn is_dpop_proof(self) -> bool {
        matches!(
            self,
            DenyReason::DpopProofMissing
                | DenyReason::DpopProofMalformed
                | DenyReason::DpopProofType
                | DenyReason::DpopProofAlgorithm
                | DenyReason::DpopProofKey
                | DenyReason::DpopProofSignature
                | DenyReason::DpopProofMethod
                | DenyReason::DpopProofUri
                | DenyReason::DpopProofStale
                | DenyReason::DpopProofTokenHash
                | DenyReason::DpopProofReplayed
                | DenyReason::DpopKeyMismatch
        )
    }

    pub fn status(self) -> DenyStatus {
        match self {
            DenyReason::EmptyCredential
            | DenyReason::RepeatedHeader
            | DenyReason::TooManyHeaders
            | DenyReason::AmbiguousPath
            | DenyReason::MultipleCredentials
            | DenyReason::MalformedCredential => DenyStatus::BadRequest,
            _ => DenyStatus::Unauthorized,
        }
    }
}

/// The HTTP status of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 400: a malformed request (`invalid_request`).
    BadRequest,
    /// 401: no credential, or one that failed (`invalid_token`).
    Unauthorized,
}

/// Why a request could not be decided: an upstream the answer depends on is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The provider's key set has never been loaded.
    KeysNotLoaded,
    /// An upstream the provider asks (introspection, webhook, GitHub) timed out, failed or answered garbage.
    Upstream,
    /// The DPoP replay cache cannot tell whether a proof is fresh (full, or its store unreachable).
    ReplayProtection,
}

// === impl Unavailable ===

impl Unavailable {
    pub const ALL: [Unavailable; 3] = [
        Unavailable::KeysNotLoaded,
        Unavailable::Upstream,
        Unavailable::ReplayProtection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::KeysNotLoaded => "keys_not_loaded",
            Unavailable::Upstream => "upstream_unavailable",
            Unavailable::ReplayProtection => "dpop_replay_unavailable",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Unavailable::KeysNotLoaded => "the identity provider's keys are not available",
            Unavailable::Upstream => "the identity provider is not available",
            Unavailable::ReplayProtection => "DPoP replay protection is not available",
        }
    }
}

/// What a denial is about: the credential (401/400), or the route's policy (403, or 401 for step-up).
#[derive(Debug, Clone, PartialEq)]
pub enum DenyCause {
    Credential(DenyReason),
    Policy(Unmet),
}

/// A denial: the cause, and which provider gave it with its own message (`deny_message`).
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub cause: DenyCause,
    /// The provider that rejected the credential, or that authenticated the principal a policy refused
    /// (none when no credential was found).
    pub provider: Option<Arc<str>>,
    /// The principal a policy refused, for the log (none for credential denials).
    pub principal: Option<Arc<str>>,
    /// The provider's `deny_message`; with no credential, those of every provider that could have taken one.
    pub message: Option<Arc<str>>,
    /// Set when the token came with the `DPoP` scheme or failed a DPoP rule: the challenge is then
    /// `DPoP algs="…"` (RFC 9449 §7.1), with a fresh `DPoP-Nonce` for `use_dpop_nonce`.
    pub dpop: Option<DpopChallenge>,
}

/// What a DPoP challenge carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopChallenge {
    /// The accepted proof algorithms, space-separated.
    pub algs: Arc<str>,
    /// A fresh nonce, sent as `DPoP-Nonce` (RFC 9449 §8).
    pub nonce: Option<Box<str>>,
}

// === impl Denial ===

impl Denial {
    /// Whether permissive mode may let this denial through, marked: only a missing credential or an
    /// unmet route requirement. A presented credential that failed is refused in every mode, and so is a
    /// token meant for another audience (`require.audience`, RFC 8707): it is an invalid credential
    /// here (401 `invalid_token` in enforce mode), never a "would deny".
    pub fn permissive_may_pass(&self) -> bool {
        match &self.cause {
            DenyCause::Policy(unmet) => unmet.reason() != UnmetReason::AudienceMismatch,
            DenyCause::Credential(reason) => *reason == DenyReason::MissingCredential,
        }
    }

    pub fn policy(unmet: Unmet) -> Denial {
        Denial {
            cause: DenyCause::Policy(unmet),
            provider: None,
            principal: None,
            message: None,
            dpop: None,
        }
    }

    /// The stable label for metrics, logs and `x-auth-would-deny`.
    pub fn label(&self) -> &'static str {
        match &self.cause {
            DenyCause::Credential(reason) => reason.as_str(),
            DenyCause::Policy(unmet) => unmet.as_str(),
        }
    }

    /// The HTTP status: 400, 401 or 403.
    pub fn status(&self) -> u16 {
        match &self.cause {
            DenyCause::Credential(reason) => match reason.status() {
                DenyStatus::BadRequest => 400,
                DenyStatus::Unauthorized => 401,
            },
            DenyCause::Policy(unmet) => unmet.status(),
        }
    }

    /// The RFC 6750 `error` code (`unauthorized` when no credential was sent).
    pub fn error_code(&self) -> &'static str {
        match &self.cause {
            DenyCause::Credential(
                DenyReason::MissingCredential | DenyReason::UnownedCredential,
            ) => "unauthorized",
            DenyCause::Credential(reason) => reason.error_code(),
            DenyCause::Policy(unmet) => unmet.error_code(),
        }
    }

    pub fn description(&self) -> &'static str {
        match &self.cause {
            DenyCause::Credential(reason) => reason.description(),
            DenyCause::Policy(unmet) => unmet.description(),
        }
    }

    /// True when the answer carries no `error` in its challenge: no credential was presented, or one of a
    /// method the route does not support (RFC 6750 §3.1).
    pub fn is_plain_challenge(&self) -> bool {
        match &self.cause {
            DenyCause::Credential(reason) => matches!(
                reason,
                DenyReason::MissingCredential | DenyReason::UnownedCredential
            ),
            DenyCause::Policy(unmet) => unmet.reason() == UnmetReason::AnonymousNotAllowed,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Arc<Identity>),
    /// Permissive mode let through a request that enforce mode would deny; it goes upstream marked with
    /// `x-auth-would-deny`, with the identity when there is one.
    Permit {
        identity: Option<Arc<Identity>>,
        would_deny: Denial,
    },
    Deny(Denial),
    Error(Unavailable),
}

// === impl Decision ===

impl Decision {
    /// The decision's kind: `allow`, `permit`, `deny` or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Permit { .. } => "permit",
            Decision::Deny(_) => "deny",
            Decision::Error(_) => "error",
        }
    }

    /// The reason label: empty for an allow, else the (would-be) deny reason or the unavailability.
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "",
            Decision::Permit { would_deny, .. } => would_deny.label(),
            Decision::Deny(denial) => denial.label(),
            Decision::Error(why) => why.as_str(),
        }
    }
}
