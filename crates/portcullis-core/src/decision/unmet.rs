//! A requirement an authenticated identity does not meet: a value, not an error, that says which status,
//! error code and challenge parameters answer it.
//!
//! - RFC 6750 §3.1: `insufficient_scope` — "The request requires higher privileges than provided by the
//!   access token. The resource server SHOULD respond with the HTTP 403 (Forbidden) status code and MAY
//!   include the `scope` attribute with the scope necessary to access the protected resource."
//! - RFC 9470 §3: `insufficient_user_authentication` — "The authentication event associated with the access
//!   token presented with the request does not meet the authentication requirements of the protected
//!   resource", answered with 401 and the `acr_values` and/or `max_age` the client must ask for.

use std::sync::Arc;

/// Why a route's requirement is not met. Each maps to a static metric label and a short description that
/// names no token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnmetReason {
    /// An anonymous identity (no credential) on a route without `allow_anonymous`. Answered like a missing
    /// credential: RFC 6750 §3.1 says such a challenge SHOULD NOT carry an error code.
    AnonymousNotAllowed,
    /// The identity's provider is not one the route accepts.
    ProviderNotAllowed,
    /// `principal: human`, and the token is a client-credentials token.
    MachineNotAllowed,
    /// `principal: machine`, and the token is a person's.
    HumanNotAllowed,
    /// `scopes.all_of` / `scopes.any_of`.
    MissingScope,
    /// `scopes.none_of`.
    ForbiddenScope,
    /// `permissions.all_of` / `permissions.any_of`.
    MissingPermission,
    /// `permissions.none_of`.
    ForbiddenPermission,
    /// A `claims` entry.
    ClaimMismatch,
    /// `organization`.
    WrongOrganization,
    /// `step_up.acr`.
    AcrNotMet,
    /// `step_up.amr`.
    AmrNotMet,
    /// `step_up.max_age`, or no `auth_time`.
    AuthTooOld,
    /// `dpop: true`, and the token is not DPoP-bound.
    DpopRequired,
    /// `audience`, and the token's `aud` does not contain it (RFC 8707).
    AudienceMismatch,
    /// A delegated token (RFC 8693 `act`) on a route without `delegation.allow: true`.
    DelegationNotAllowed,
    /// `delegation.max_depth`.
    DelegationTooDeep,
    /// `delegation.actors`.
    ActorNotAllowed,
    /// `delegation.max_lifetime_seconds`.
    DelegationTooLong,
    /// `delegation.forbid_permissions`.
    DelegatedPermissionForbidden,
    /// An `expression` yielded `false`.
    ExpressionFalse,
    /// An `expression` could not be evaluated (an absent claim, a wrong type) or did not yield a bool.
    ExpressionError,
    /// The group under `not` holds.
    ExcludedByNot,
}

// === impl UnmetReason ===

impl UnmetReason {
    /// Every reason, for metrics.
    pub const ALL: &[UnmetReason] = &[
        UnmetReason::AnonymousNotAllowed,
        UnmetReason::ProviderNotAllowed,
        UnmetReason::MachineNotAllowed,
        UnmetReason::HumanNotAllowed,
        UnmetReason::MissingScope,
        UnmetReason::ForbiddenScope,
        UnmetReason::MissingPermission,
        UnmetReason::ForbiddenPermission,
        UnmetReason::ClaimMismatch,
        UnmetReason::WrongOrganization,
        UnmetReason::AcrNotMet,
        UnmetReason::AmrNotMet,
        UnmetReason::AuthTooOld,
        UnmetReason::DpopRequired,
        UnmetReason::AudienceMismatch,
        UnmetReason::DelegationNotAllowed,
        UnmetReason::DelegationTooDeep,
        UnmetReason::ActorNotAllowed,
        UnmetReason::DelegationTooLong,
        UnmetReason::DelegatedPermissionForbidden,
        UnmetReason::ExpressionFalse,
        UnmetReason::ExpressionError,
        UnmetReason::ExcludedByNot,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            UnmetReason::AnonymousNotAllowed => "anonymous_not_allowed",
            UnmetReason::ProviderNotAllowed => "provider_not_allowed",
            UnmetReason::MachineNotAllowed => "machine_not_allowed",
            UnmetReason::HumanNotAllowed => "human_not_allowed",
            UnmetReason::MissingScope => "missing_scope",
            UnmetReason::ForbiddenScope => "forbidden_scope",
            UnmetReason::MissingPermission => "missing_permission",
            UnmetReason::ForbiddenPermission => "forbidden_permission",
            UnmetReason::ClaimMismatch => "claim_mismatch",
            UnmetReason::WrongOrganization => "wrong_organization",
            UnmetReason::AcrNotMet => "acr_not_met",
            UnmetReason::AmrNotMet => "amr_not_met",
            UnmetReason::AuthTooOld => "auth_too_old",
            UnmetReason::DpopRequired => "dpop_required",
            UnmetReason::AudienceMismatch => "audience_mismatch",
            UnmetReason::DelegationNotAllowed => "delegation_not_allowed",
            UnmetReason::DelegationTooDeep => "delegation_too_deep",
            UnmetReason::ActorNotAllowed => "actor_not_allowed",
            UnmetReason::DelegationTooLong => "delegation_too_long",
            UnmetReason::DelegatedPermissionForbidden => "delegated_permission_forbidden",
            UnmetReason::ExpressionFalse => "expression_false",
            UnmetReason::ExpressionError => "expression_error",
            UnmetReason::ExcludedByNot => "excluded_by_not",
        }
    }

    /// The `error_description` shown to the client.
    pub fn description(self) -> &'static str {
        match self {
            UnmetReason::AnonymousNotAllowed => "authentication required",
            UnmetReason::ProviderNotAllowed => "this credential is not accepted on this route",
            UnmetReason::MachineNotAllowed => "this route is not available to machine clients",
            UnmetReason::HumanNotAllowed => "this route is only available to machine clients",
            UnmetReason::MissingScope => "the token lacks a required scope",
            UnmetReason::ForbiddenScope => "a scope of the token is not allowed on this route",
            UnmetReason::MissingPermission => "the token lacks a required permission",
            UnmetReason::ForbiddenPermission => {
                "a permission of the token is not allowed on this route"
            }
            UnmetReason::ClaimMismatch => "the token does not meet a claim requirement",
            UnmetReason::WrongOrganization => {
                "the token's organization may not access this resource"
            }
            UnmetReason::AcrNotMet => "a different authentication level is required",
            UnmetReason::AmrNotMet => "multi-factor authentication is required",
            UnmetReason::AuthTooOld => "more recent authentication is required",
            UnmetReason::DpopRequired => "a DPoP-bound token is required on this route",
            UnmetReason::AudienceMismatch => "the token is not meant for this resource",
            UnmetReason::DelegationNotAllowed => "delegated tokens are not accepted on this route",
            UnmetReason::DelegationTooDeep => "the delegation chain is too long",
            UnmetReason::ActorNotAllowed => "an actor of the delegation is not allowed",
            UnmetReason::DelegationTooLong => "the delegated token lives too long",
            UnmetReason::DelegatedPermissionForbidden => {
                "a delegated token may not use this permission here"
            }
            UnmetReason::ExpressionFalse | UnmetReason::ExpressionError => {
                "the request does not meet a condition of this route"
            }
            UnmetReason::ExcludedByNot => "the request matches a condition excluded on this route",
        }
    }

    /// 401 for no credential, for step-up (RFC 9470 §3) and for a provider the route does not take
    /// (RFC 6750 §3.1 `invalid_token`: "invalid for other reasons"); 403 for everything else (RFC 6750
    /// §3.1).
    pub fn status(self) -> u16 {
        match self {
            UnmetReason::AnonymousNotAllowed
            | UnmetReason::ProviderNotAllowed
            | UnmetReason::DpopRequired
            | UnmetReason::AudienceMismatch
            | UnmetReason::AcrNotMet
            | UnmetReason::AmrNotMet
            | UnmetReason::AuthTooOld => 401,
            _ => 403,
        }
    }

    /// The `error` of the `WWW-Authenticate` challenge; `unauthorized` (the body's error for a missing
    /// credential) is not sent in the challenge.
    pub fn error_code(self) -> &'static str {
        match self {
            UnmetReason::AnonymousNotAllowed => "unauthorized",
            UnmetReason::ProviderNotAllowed
            | UnmetReason::DpopRequired
            | UnmetReason::AudienceMismatch => "invalid_token",
            UnmetReason::AcrNotMet | UnmetReason::AmrNotMet | UnmetReason::AuthTooOld => {
                "insufficient_user_authentication"
            }
            _ => "insufficient_scope",
        }
    }
}

/// A requirement not met, with what the client must obtain: the `scope` it lacks (RFC 6750 §3), the
/// `acr_values` and `max_age` to re-authenticate with (RFC 9470 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub(crate) reason: UnmetReason,
    pub(crate) scope: Option<Arc<str>>,
    pub(crate) acr_values: Option<Arc<str>>,
    pub(crate) max_age: Option<Arc<str>>,
}

// === impl Unmet ===

impl Unmet {
    pub(crate) fn new(reason: UnmetReason) -> Unmet {
        Unmet {
            reason,
            scope: None,
            acr_values: None,
            max_age: None,
        }
    }

    pub fn reason(&self) -> UnmetReason {
        self.reason
    }

    /// 401 or 403 (a route's `deny.status` may replace it: see
    /// the route's `deny.status`).
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// `insufficient_scope`, `insufficient_user_authentication` or `invalid_token`.
    pub fn error_code(&self) -> &'static str {
        self.reason.error_code()
    }

    /// A fixed sentence, safe to show to the client.
    pub fn description(&self) -> &'static str {
        self.reason.description()
    }

    /// The metric and log label.
    pub fn as_str(&self) -> &'static str {
        self.reason.as_str()
    }

    /// The challenge's extra auth-params after `error` and `error_description`, unquoted: `scope`
    /// (space-separated missing scopes or permissions), `acr_values` (space-separated), `max_age` (seconds).
    /// Values never contain `"`, `\` or control characters (configuration refuses them), so each can be
    /// sent as a quoted-string as is.
    pub fn challenge_params(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        [
            ("scope", &self.scope),
            ("acr_values", &self.acr_values),
            ("max_age", &self.max_age),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_deref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_up_is_401_and_the_rest_403() {
        let statuses: Vec<(&str, u16, &str)> = UnmetReason::ALL
            .iter()
            .map(|r| (r.as_str(), r.status(), r.error_code()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("anonymous_not_allowed", 401, "unauthorized"),
                ("provider_not_allowed", 401, "invalid_token"),
                ("machine_not_allowed", 403, "insufficient_scope"),
                ("human_not_allowed", 403, "insufficient_scope"),
                ("missing_scope", 403, "insufficient_scope"),
                ("forbidden_scope", 403, "insufficient_scope"),
                ("missing_permission", 403, "insufficient_scope"),
                ("forbidden_permission", 403, "insufficient_scope"),
                ("claim_mismatch", 403, "insufficient_scope"),
                ("wrong_organization", 403, "insufficient_scope"),
                ("acr_not_met", 401, "insufficient_user_authentication"),
                ("amr_not_met", 401, "insufficient_user_authentication"),
                ("auth_too_old", 401, "insufficient_user_authentication"),
                ("dpop_required", 401, "invalid_token"),
                ("audience_mismatch", 401, "invalid_token"),
                ("delegation_not_allowed", 403, "insufficient_scope"),
                ("delegation_too_deep", 403, "insufficient_scope"),
                ("actor_not_allowed", 403, "insufficient_scope"),
                ("delegation_too_long", 403, "insufficient_scope"),
                ("delegated_permission_forbidden", 403, "insufficient_scope"),
                ("expression_false", 403, "insufficient_scope"),
                ("expression_error", 403, "insufficient_scope"),
                ("excluded_by_not", 403, "insufficient_scope"),
            ]
        );
    }

    #[test]
    fn challenge_params_skip_what_is_absent() {
        let mut unmet = Unmet::new(UnmetReason::AuthTooOld);
        assert_eq!(unmet.challenge_params().count(), 0);
        unmet.max_age = Some("180".into());
        unmet.acr_values = Some("urn:mfa".into());
        let params: Vec<_> = unmet.challenge_params().collect();
        assert_eq!(params, [("acr_values", "urn:mfa"), ("max_age", "180")]);
    }

    #[test]
    fn descriptions_are_short_and_unquoted() {
        for reason in UnmetReason::ALL {
            let d = reason.description();
            assert!(d.len() < 64 && !d.contains(['"', '\\']), "{d}");
        }
    }
}
