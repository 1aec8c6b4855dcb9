//! The policy part of the configuration document: typed serde structs only. What they mean is checked
//! when the policy is compiled (`policy::Policy::compile`), which reports every problem with its path.
//!
//! The policy's keys sit at the top level of the document, beside `server` and `providers`; they are
//! listed in [`POLICY_KEYS`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

use serde::Serialize;

/// Whether a policy denial is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A request that fails the policy is denied.
    #[default]
    Enforce,
    /// A request that fails the policy is allowed and marked as a would-be denial, so a team can turn
    /// authorization on route by route and see what would break first.
    Permissive,
}

// === impl Mode ===

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Permissive => "permissive",
        }
    }
}

/// The top-level keys of the configuration document that belong to [`PolicyConfig`].
pub const POLICY_KEYS: &[&str] = &[
    "mode",
    "claims_namespace",
    "claims_namespace_aliases",
    "default_route",
    "routes",
];

/// Per-route authorization: the routes in order, the default route, and how claims are named.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `enforce` denies what the policy refuses; `permissive` allows it and marks it as a would-be denial.
    /// A route's own `mode` wins. Defaults to `enforce`.
    pub mode: Mode,
    /// The namespace of the IdP's custom claims, e.g. `https://example.com/` (Auth0 requires a URL
    /// namespace for custom claims). A `namespaced: true` claim `roles` is read from
    /// `https://example.com/roles`, and the organization also from `https://example.com/org_id`. Must end
    /// with `/` or `:`. Defaults to none.
    pub claims_namespace: Option<String>,
    /// Older namespaces still read, in order, when a namespaced claim is absent under `claims_namespace`,
    /// so renaming the namespace does not break tokens issued before the rename. Defaults to none.
    pub claims_namespace_aliases: Vec<String>,
    /// Applies when no route matches. Defaults to any provider, no anonymous access, no requirement.
    pub default_route: DefaultRouteConfig,
    /// Tried in order; the first route whose `match` fits the request applies. Defaults to none.
    pub routes: Vec<RouteConfig>,
}

/// One route: what requests it takes and what they need.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A unique name for logs, metrics and the deny body: letters, digits, `.`, `_`, `-`, `:`; `default`
    /// is reserved for the default route. Required.
    pub name: String,
    /// Which requests take this route: every condition given must hold. Required, with at least one
    /// condition (the default route is the catch-all).
    #[serde(rename = "match")]
    pub matches: MatchConfig,
    /// The providers that may authenticate requests on this route (any of them). Defaults to all.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Allow requests that carry no credential at all; a credential that is present must still be valid.
    /// Cannot be combined with `require`. Defaults to false.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Overrides the global `mode` for this route. Defaults to the global `mode`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// What an authenticated identity must have. Defaults to nothing beyond authentication.
    #[serde(default)]
    pub require: RequireConfig,
    /// How a policy denial on this route is answered. Defaults to the standard answer.
    #[serde(default)]
    pub deny: DenyConfig,
    /// The protected resource (RFC 9728) this route belongs to: one of `resources[].resource`. Its 401
    /// challenges then carry `resource_metadata` (the metadata URL on the request's host). Defaults to
    /// none.
    #[serde(default)]
    pub resource: Option<String>,
    /// The signed identity token on this route: `true`, `false`, or `{audience: …}` for another audience.
    /// Needs the top-level `identity_token`. Defaults to `true` when `identity_token` is configured.
    #[serde(default)]
    pub identity_token: Option<RouteIdentityToken>,
    /// Copy the credential's claims into this route's allows' dynamic metadata (`claims`). Defaults to
    /// `answers.claims_in_metadata`.
    #[serde(default)]
    pub claims_in_metadata: Option<bool>,
}

/// The route for requests no other route matches: a [`RouteConfig`] without `name` and `match`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultRouteConfig {
    /// See [`RouteConfig::providers`]. Defaults to all.
    pub providers: Option<Vec<String>>,
    /// See [`RouteConfig::allow_anonymous`]. Defaults to false.
    pub allow_anonymous: bool,
    /// See [`RouteConfig::mode`]. Defaults to the global `mode`.
    pub mode: Option<Mode>,
    /// See [`RouteConfig::require`]. Defaults to nothing beyond authentication.
    pub require: RequireConfig,
    /// See [`RouteConfig::deny`]. Defaults to the standard answer.
    pub deny: DenyConfig,
    /// See [`RouteConfig::resource`]. Defaults to none.
    pub resource: Option<String>,
    /// See [`RouteConfig::identity_token`]. Defaults to `true` when `identity_token` is configured.
    pub identity_token: Option<RouteIdentityToken>,
    /// See [`RouteConfig::claims_in_metadata`]. Defaults to `answers.claims_in_metadata`.
    pub claims_in_metadata: Option<bool>,
}

/// A route's identity token: on, off, or on for another audience.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RouteIdentityToken {
    Enabled(bool),
    Audience(RouteTokenAudience),
}

/// `{audience: …}`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTokenAudience {
    /// The token's `aud` on this route instead of `identity_token.audience`. Required, not empty.
    pub audience: String,
}

/// Conditions on the request; all that are given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// `api.example.com` (exact, case-insensitive) or `*.example.com` (any subdomain, not the apex). The
    /// request's port is ignored. Defaults to any host.
    pub host: Option<String>,
    /// The exact path; the query string is never part of the path. At most one of `path`, `path_prefix`,
    /// `path_glob`. Defaults to any path.
    pub path: Option<String>,
    /// A plain string prefix: `/api/` matches `/api/x`, and `/api` also matches `/apix`. Defaults to any
    /// path.
    pub path_prefix: Option<String>,
    /// Segments separated by `/`: `*` is exactly one non-empty segment, a final `**` is zero or more
    /// segments (`/tenants/*/admin/**`). Defaults to any path.
    pub path_glob: Option<String>,
    /// Upper-case method names, any of them. Defaults to any method.
    pub methods: Option<Vec<String>>,
    /// Lower-case header names and a value: a string (exact match) or `{present: true|false}`. Defaults to
    /// no header condition.
    pub headers: Option<BTreeMap<String, ValueMatch>>,
    /// Envoy's per-route `context_extensions`, matched like `headers`. Defaults to none.
    pub context_extensions: Option<BTreeMap<String, ValueMatch>>,
}

/// A header or context-extension condition.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ValueMatch {
    /// The value must be exactly this.
    Exact(String),
    /// `{present: true}`: any value; `{present: false}`: must not be sent.
    Present(PresentMatch),
}

/// `{present: bool}`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresentMatch {
    /// `true`: the header (or context extension) must be present, with any value; `false`: it must not be.
    pub present: bool,
}

/// Requirements on an authenticated identity. Every one given must hold (AND); `any_of` and `not` combine
/// groups of them. Scope, permission, claim, organization, principal and expression failures answer 403;
/// step-up failures answer 401.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RequireConfig {
    /// OAuth2 scopes (`scope` string or `scp` array). Defaults to none.
    pub scopes: Option<GrantsConfig>,
    /// Auth0 RBAC permissions (the `permissions` array claim). Defaults to none.
    pub permissions: Option<GrantsConfig>,
    /// Claim conditions, all of which must hold. Defaults to none.
    pub claims: Option<Vec<ClaimConfig>>,
    /// The organization (`org_id`) the identity must belong to. Defaults to none.
    pub organization: Option<OrganizationConfig>,
    /// `human`, `machine` (client-credentials tokens) or `any`. Defaults to `any`.
    pub principal: Principal,
    /// Step-up authentication (RFC 9470). Defaults to none.
    pub step_up: Option<StepUpConfig>,
    /// A Common Expression Language condition that must yield `true`, over `claims`, `identity`,
    /// `request`, `route`, `context_extensions` and `now`. Compiled at load: a syntax error or an unknown
    /// variable is a configuration problem. An evaluation error (an absent claim, a wrong type) denies
    /// (`expression_error`); `false` denies (`expression_false`). Defaults to none.
    pub expression: Option<String>,
    /// Groups of requirements of which at least one must hold as a whole (OR): `any_of: [{principal:
    /// machine, scopes: {all_of: [write:data]}}, {principal: human, step_up: {amr: [mfa]}}]`. When none
    /// holds, the first group's unmet requirement answers. Defaults to none.
    pub any_of: Option<Vec<RequireConfig>>,
    /// A group of requirements that must not hold as a whole (NOT); when it holds, the request is denied
    /// (`excluded_by_not`). Defaults to none.
    pub not: Option<Box<RequireConfig>>,
    /// `true`: only DPoP-bound tokens (`cnf.jkt`) with a valid proof (RFC 9449), from a `jwt` or
    /// `introspection` provider; others answer 401 `invalid_token`. Defaults to false.
    pub dpop: bool,
    /// The token's `aud` must contain exactly this resource (RFC 8707), even when the provider accepts
    /// several audiences; else 401 `invalid_token`. Defaults to none.
    pub audience: Option<String>,
    /// Delegated tokens (RFC 8693 `act`). Without `allow: true`, a delegated token is refused (403).
    /// Defaults to refusing them.
    pub delegation: Option<DelegationConfig>,
}

/// Which delegated tokens (RFC 8693 §4.1 `act`) a route takes. The rules apply to delegated tokens only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DelegationConfig {
    /// Take delegated tokens at all. Defaults to false (refused with 403).
    pub allow: bool,
    /// At most this many actors in the chain (1: an agent acting for a user, no agent acting for an
    /// agent). Defaults to no limit.
    pub max_depth: Option<usize>,
    /// Every actor of the chain (each `act.sub`) must be one of these. Defaults to any actor.
    pub actors: Option<Vec<String>>,
    /// The token may live at most this long (`exp` − `iat`; no `iat` fails), e.g. 300 for short-lived
    /// agent tokens. Defaults to no limit.
    pub max_lifetime_seconds: Option<u64>,
    /// Permissions a delegated token may hold but never exercise here (e.g. `machine`: an agent must
    /// never act as a machine user). Defaults to none.
    pub forbid_permissions: Option<Vec<String>>,
}

/// Rules over a set of granted names (scopes or permissions). At least one list must be given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrantsConfig {
    /// Every one must be granted. Defaults to none.
    pub all_of: Option<Vec<String>>,
    /// At least one must be granted. Defaults to none.
    pub any_of: Option<Vec<String>>,
    /// None may be granted (e.g. a `data-labeler` permission that confines a user to a few routes).
    /// Defaults to none.
    pub none_of: Option<Vec<String>>,
}

/// One claim condition: `claim` names the claim, exactly one test says what it must be.
///
/// `claim: email` is one top-level claim, read literally, so a URL-named claim (`https://example.com/roles`)
/// needs no escaping. `claim: [address, country]` is a path into nested objects. `namespaced: true` puts
/// `claims_namespace` (then each alias, in order) before the first name: `{claim: roles, namespaced: true}`
/// reads `https://example.com/roles`, else `https://old.example.com/roles`. A claim that is `null` counts
/// as absent.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimConfig {
    /// The claim's name, or the path of names into nested objects. Required.
    pub claim: ClaimName,
    /// Read the first name under `claims_namespace` and its aliases. Defaults to false.
    #[serde(default)]
    pub namespaced: bool,
    /// The claim is exactly this string, number or boolean (no conversion: `"1"` is not `1`).
    pub equals: Option<Json>,
    /// The claim is one of these strings, numbers or booleans.
    pub one_of: Option<Vec<Json>>,
    /// The claim is an array with an element equal to this.
    pub contains: Option<Json>,
    /// The claim is a string starting with this.
    pub prefix: Option<String>,
    /// `exists: true`: the claim is present.
    pub exists: Option<bool>,
    /// `absent: true`: the claim is not present.
    pub absent: Option<bool>,
}

/// A claim's name, or a path of names into nested objects.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ClaimName {
    Name(String),
    Path(Vec<String>),
}

/// Which organization the identity must belong to: exactly one form.
///
/// The identity's organization is the string claim `org_id` (Auth0 Organizations), else `<namespace>org_id`
/// under `claims_namespace` and then each alias. No organization in the token never passes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrganizationConfig {
    /// This organization.
    pub equals: Option<String>,
    /// One of these organizations.
    pub one_of: Option<Vec<String>>,
    /// The organization named by this request header (e.g. `x-tenant`).
    pub from_header: Option<String>,
    /// The organization named by this path segment, counted from 0 after the leading `/`: in
    /// `/tenants/org_1/admin`, segment 1 is `org_1`. A path with `.`/`..` segments, an empty segment there,
    /// or an encoded `/`, `\` or `.` never passes, so a tenant cannot walk into another tenant's path.
    pub from_path_segment: Option<usize>,
}

/// Which kind of principal a route takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Principal {
    /// Humans and machines.
    #[default]
    Any,
    /// People only; client-credentials tokens are refused.
    Human,
    /// Client-credentials tokens only.
    Machine,
}

/// Step-up authentication (RFC 9470). At least one field must be given; failing any answers 401
/// `insufficient_user_authentication` with the configured `acr_values` and `max_age`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StepUpConfig {
    /// The token's `acr` must be one of these (in order of preference; sent as `acr_values`). Defaults to
    /// any.
    pub acr: Option<Vec<String>>,
    /// The token's `amr` array must contain every one of these (RFC 8176 values, e.g. `mfa`). Defaults to
    /// none.
    pub amr: Option<Vec<String>>,
    /// The token's `auth_time` must be at most this many seconds ago (RFC 9470 §3 `max_age`); a token
    /// without `auth_time` fails. Defaults to no limit.
    pub max_age: Option<u64>,
}

/// How a policy denial on a route is answered.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DenyConfig {
    /// A 4xx status replacing 401/403 (e.g. 404 to hide the route); the `WWW-Authenticate` challenge is
    /// still sent. Defaults to the requirement's own status.
    pub status: Option<u16>,
    /// Extra response headers: lower-case names, printable values. Defaults to none.
    pub headers: BTreeMap<String, String>,
    /// The response body, with `{{error}}`, `{{error_description}}`, `{{decision_id}}` and `{{route}}`
    /// replaced. Defaults to the standard body.
    pub body: Option<String>,
}
