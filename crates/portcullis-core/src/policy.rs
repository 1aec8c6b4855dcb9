//! Per-route authorization policy: which route a request takes (the first whose `match` fits, else the
//! default route), which providers and principals the route accepts, and what an authenticated identity
//! must have there: scopes, Auth0 RBAC permissions, claims, organization, step-up authentication.
//!
//! [`Policy::compile`] compiles a [`PolicyConfig`] once, reporting every problem with the path of its
//! field. Each compiled [`Route`] owns everything about itself: its matcher, the indices of the providers
//! it may use, its requirements, its challenges and its deny settings. Matching and evaluation then only
//! compare borrowed strings and allocate nothing on an allow. A requirement not met is a value, [`Unmet`],
//! that carries its answer: 403 `insufficient_scope` (RFC 6750 §3.1) or 401
//! `insufficient_user_authentication` (RFC 9470 §3), and the challenge parameters.
//!
//! # Parts
//! - `matcher`: host, path, method, header and `context_extensions` conditions.
//! - `claims`: claim lookup by name, path, and namespace with aliases.
//! - `requirement`: principal, scopes, permissions, claims, organization, expressions, `any_of`/`not`,
//!   step-up.
//! - `expression`: CEL expressions, compiled once, over the identity and the request.
//! - `deny`: a route's own deny status, headers and body template.
//! - `explain`: the serializable explanation of a decision.

mod claims;
mod deny;
mod explain;
mod expression;
mod index;
mod matcher;
mod requirement;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::sync::Arc;

pub use self::deny::{DenySettings, DenyVars};
pub use self::explain::{ExplainStep, RouteChoice, RouteTrace};

use self::claims::Namespaces;
use self::expression::HeaderReads;
use self::matcher::Matcher;
use self::requirement::Requirements;
use crate::config::policy::{DenyConfig, RequireConfig, RouteIdentityToken};
use crate::config::{ConfigErrors, Mode, PolicyConfig, Problems};
use crate::decision::{Unmet, UnmetReason};
use crate::identity::{Identity, PrincipalKind};
use crate::request::RequestView;

/// The name of the route that applies when no other matches.
pub const DEFAULT_ROUTE: &str = "default";

/// What the policy compiler needs to know of each configured provider, in declared order.
#[derive(Debug, Clone, Copy)]
pub struct ProviderInfo<'a> {
    pub name: &'a str,
    /// The `WWW-Authenticate` scheme of the provider, when it reads the `Authorization` header.
    pub challenge_scheme: Option<&'a str>,
}

/// The compiled policy: routes in order and the default route.
#[derive(Debug)]
pub struct Policy {
    routes: Box<[Route]>,
    default: Route,
    /// Every header a route's `match` or requirement reads (lower-case): one that arrives more than once
    /// is refused, so no decision rests on the first of several lines.
    read_headers: Box<[Box<str>]>,
    /// The routes by host and first path segment (`None` for a policy small enough to walk).
    index: Option<index::RouteIndex>,
}

/// From this many routes on, a route is found through the index instead of walking the list (below it,
/// walking is as fast as a lookup).
const INDEX_FROM: usize = 16;

/// One compiled route: everything about it, owned.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    /// The route's position in [`Policy::routes`] (the default route last).
    index: usize,
    matcher: Matcher,
    /// The names the route lists (`None`: every provider) and their indices in declared order.
    providers: Option<Box<[String]>>,
    provider_indices: Option<Box<[usize]>>,
    allow_anonymous: bool,
    mode: Mode,
    requirements: Requirements,
    /// An expression of the route reads the whole header map: any header on more than one line is refused.
    reads_any_header: bool,
    /// Shared by every route with the same providers (one for all the routes that take every provider).
    challenge: Arc<Challenge>,
    deny: DenySettings,
    /// The path of the route's RFC 9728 metadata document (`resource`), for `resource_metadata`.
    resource_metadata: Option<Box<str>>,
    identity_token: RouteToken,
    /// `claims_in_metadata`: `None` follows `answers.claims_in_metadata`.
    claims_in_metadata: Option<bool>,
}

/// Whether an allow on a route carries the signed identity token, and for which audience.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RouteToken {
    /// With the configured audience (when `identity_token` is configured).
    #[default]
    Default,
    Off,
    /// With this audience instead.
    Audience(Arc<str>),
}

/// A route's `WWW-Authenticate` challenges (RFC 6750 §3), fixed at compile time.
#[derive(Debug, Default)]
pub struct Challenge {
    /// The scheme of an error challenge: the first its providers read from `Authorization`, else `Bearer`.
    pub scheme: Box<str>,
    /// The challenge when no credential was sent: one `<scheme> realm="…"` per scheme its providers read.
    pub plain: Box<str>,
    pub realm: Box<str>,
}

// === impl Challenge ===

impl Challenge {
    fn new(providers: &[ProviderInfo<'_>], allowed: Option<&[usize]>, realm: &str) -> Challenge {
        let mut schemes: Vec<&str> = Vec::new();
        for (i, provider) in providers.iter().enumerate() {
            if allowed.is_some_and(|a| !a.contains(&i)) {
                continue;
            }
            if let Some(scheme) = provider.challenge_scheme {
                if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
                    schemes.push(scheme);
                }
            }
        }
        if schemes.is_empty() {
            schemes.push("Bearer");
        }
        let plain = schemes
            .iter()
            .map(|scheme| format!("{scheme} realm=\"{realm}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Challenge {
            scheme: schemes[0].into(),
            plain: plain.into(),
            realm: realm.into(),
        }
    }
}

// === impl Policy ===

impl Policy {
    /// Compiles a policy against the configured providers; `realm` goes into every challenge. Reports every
    /// problem, each with the path of its field (`routes[2].match.path_glob`), in document order.
    pub fn compile(
        config: &PolicyConfig,
        providers: &[ProviderInfo<'_>],
        realm: &str,
    ) -> Result<Policy, ConfigErrors> {
        let mut problems = Problems::default();
        let namespaces = Namespaces::compile(&mut problems, config);
        let mut known = Known::new(providers, realm);
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            check_route_name(&mut problems, &path, &route.name, &mut names);
            let matcher = Matcher::compile(&mut problems, &format!("{path}.match"), &route.matches);
            let parts = RouteParts {
                providers: route.providers.as_deref(),
                allow_anonymous: route.allow_anonymous,
                mode: route.mode.unwrap_or(config.mode),
                require: &route.require,
                deny: &route.deny,
                resource: route.resource.as_deref(),
                identity_token: route.identity_token.as_ref(),
                claims_in_metadata: route.claims_in_metadata,
            };
            let compiled = parts.compile(&mut problems, &path, &mut known, &namespaces);
            routes.push(Route {
                name: route.name.as_str().into(),
                index: i,
                matcher,
                ..compiled
            });
        }
        let d = &config.default_route;
        let default = RouteParts {
            providers: d.providers.as_deref(),
            allow_anonymous: d.allow_anonymous,
            mode: d.mode.unwrap_or(config.mode),
            require: &d.require,
            deny: &d.deny,
            resource: d.resource.as_deref(),
            identity_token: d.identity_token.as_ref(),
            claims_in_metadata: d.claims_in_metadata,
        }
        .compile(&mut problems, "default_route", &mut known, &namespaces);
        // Every header a requirement reads, however deep in `any_of`/`not` or an expression, and every
        // header a `match` reads.
        let mut reads = HeaderReads::default();
        let mut default = Route {
            index: routes.len(),
            ..default
        };
        for route in routes.iter_mut().chain(std::iter::once(&mut default)) {
            let mut own = HeaderReads::default();
            route.requirements.header_reads(&mut own);
            route.reads_any_header = own.any;
            for name in own.names {
                if !reads.names.contains(&name) {
                    reads.names.push(name);
                }
            }
        }
        let matched = config
            .routes
            .iter()
            .filter_map(|r| r.matches.headers.as_ref())
            .flat_map(|h| h.keys().map(String::as_str));
        for name in matched {
            let name: Box<str> = name.to_ascii_lowercase().into();
            if !reads.names.contains(&name) {
                reads.names.push(name);
            }
        }
        let index = (routes.len() >= INDEX_FROM)
            .then(|| index::RouteIndex::build(routes.iter().map(|r| &r.matcher)));
        problems.into_result(Policy {
            read_headers: reads.names.into(),
            default,
            routes: routes.into(),
            index,
        })
    }

    /// The route for a request: the first whose `match` fits, else the default route.
    pub fn route(&self, request: &RequestView<'_>) -> &Route {
        self.first_route(request, false)
    }

    /// The first route whose `match` fits `request` (`canonical`: whose canonical patterns fit it), through
    /// the index when there is one; else the default route.
    fn first_route(&self, request: &RequestView<'_>, canonical: bool) -> &Route {
        let fits = |route: &Route| match canonical {
            false => route.matcher.matches(request),
            true => route.matcher.matches_canonical(request),
        };
        if let Some(index) = &self.index {
            if let Ok(found) = index.first(canonical, request, |i| fits(&self.routes[i])) {
                return found.map_or(&self.default, |i| &self.routes[i]);
            }
        }
        self.routes
            .iter()
            .find(|r| fits(r))
            .unwrap_or(&self.default)
    }

    /// Whether the request's path, read the way an upstream may read it ([`matcher::canonical_path`]:
    /// `/Admin`, `/admin;x`, `/admin%3Bx`, `/admin.`), would take another route than the path as sent. Such
    /// a request is refused, so a near-variant never slips past a stricter exact-path route.
    pub fn ambiguous_path(&self, request: &RequestView<'_>, route: &Route) -> bool {
        // Already canonical (the usual case): no allocation, but the canonical patterns still apply.
        let canonical = matcher::canonical_path(request.path);
        let folded = RequestView {
            path: canonical.as_deref().unwrap_or(request.path),
            ..*request
        };
        let other = self.first_route(&folded, true);
        !std::ptr::eq(other, route)
    }

    /// Whether the request carries a header the policy reads on more than one line; on a route whose
    /// expressions read the header map itself, any header on more than one line.
    pub fn repeated_header(&self, request: &RequestView<'_>, route: &Route) -> bool {
        if route.reads_any_header {
            let mut names = request.headers.names();
            let mut seen: Vec<&str> = Vec::new();
            return names.any(|name| {
                let repeated = seen.iter().any(|s| s.eq_ignore_ascii_case(name));
                seen.push(name);
                repeated
            });
        }
        self.read_headers
            .iter()
            .any(|name| request.headers.count(name) > 1)
    }

    /// The route named `name` (the default route's name included), for a host that picks the route
    /// itself (the Envoy module's per-route config).
    pub fn route_named(&self, name: &str) -> Option<&Route> {
        self.routes().find(|route| route.name() == name)
    }

    /// Every route in order, the default route last.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().chain(std::iter::once(&self.default))
    }

    /// How [`Policy::route`] chooses for this request, condition by condition.
    pub fn explain_route(&self, request: &RequestView<'_>) -> RouteChoice {
        let mut tried = Vec::new();
        for route in &*self.routes {
            let conditions = route.matcher.explain(request);
            let matched = conditions.iter().all(|c| c.passed);
            tried.push(RouteTrace {
                route: route.name.to_string(),
                matched,
                conditions,
            });
            if matched {
                break;
            }
        }
        let route = self.route(request);
        RouteChoice {
            route: route.name.to_string(),
            mode: route.mode,
            providers: route.providers().map(<[String]>::to_vec),
            allow_anonymous: route.allow_anonymous,
            tried,
        }
    }
}

// === impl Route ===

impl Route {
    /// The route's name (`default` for the default route), for logs, metrics and the deny body.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (a metric label).
    pub fn name_shared(&self) -> &Arc<str> {
        &self.name
    }

    /// The name, shared (no copy per request).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The route's position in [`Policy::routes`], the default route last.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The providers that may authenticate requests here; `None` means all.
    pub fn providers(&self) -> Option<&[String]> {
        self.providers.as_deref()
    }

    /// The same providers as indices in declared order; `None` means all.
    pub fn provider_indices(&self) -> Option<&[usize]> {
        self.provider_indices.as_deref()
    }

    /// The route's `WWW-Authenticate` challenges.
    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// Whether a request without any credential is allowed here.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// The route's mode, or the global one.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The path of the route's RFC 9728 metadata document, when it names a `resource`.
    pub fn resource_metadata(&self) -> Option<&str> {
        self.resource_metadata.as_deref()
    }

    /// The route's own `claims_in_metadata`, if it sets one.
    pub fn claims_in_metadata(&self) -> Option<bool> {
        self.claims_in_metadata
    }

    /// How a policy denial here is answered beyond the standard status and challenge.
    pub fn deny(&self) -> &DenySettings {
        &self.deny
    }

    /// Whether an allow here carries the signed identity token, and for which audience.
    pub fn identity_token(&self) -> &RouteToken {
        &self.identity_token
    }

    /// Whether this route takes identities from the named provider.
    pub fn accepts_provider(&self, provider: &str) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == provider))
    }

    /// Checks an identity against every requirement, in order: provider, anonymity, principal, scopes,
    /// permissions, claims, organization, step-up. `now` is Unix seconds (from [`crate::clock::Clock`]),
    /// used for `auth_time`. Returns the first requirement not met. An anonymous identity passes only with
    /// `allow_anonymous` (which excludes requirements).
    pub fn evaluate(
        &self,
        identity: &Identity,
        request: &RequestView<'_>,
        now: i64,
    ) -> Result<(), Unmet> {
        if !self.accepts_provider(&identity.provider) {
            return Err(Unmet::new(UnmetReason::ProviderNotAllowed));
        }
        if identity.kind == PrincipalKind::Anonymous {
            return match self.allow_anonymous {
                true => Ok(()),
                false => Err(Unmet::new(UnmetReason::AnonymousNotAllowed)),
            };
        }
        self.requirements.check(identity, request, &self.name, now)
    }

    /// Every requirement of the route and whether `identity` meets it, the provider first.
    pub fn explain(
        &self,
        identity: &Identity,
        request: &RequestView<'_>,
        now: i64,
    ) -> Vec<ExplainStep> {
        let mut steps = Vec::new();
        if let Some(names) = &self.providers {
            let ok = self.accepts_provider(&identity.provider);
            steps.push(ExplainStep::new(
                format!("provider one of [{}]", names.join(", ")),
                ok,
                (!ok).then_some(UnmetReason::ProviderNotAllowed.as_str()),
            ));
        }
        if identity.kind == PrincipalKind::Anonymous {
            let ok = self.allow_anonymous;
            steps.push(ExplainStep::new(
                "allow_anonymous".to_owned(),
                ok,
                (!ok).then_some(UnmetReason::AnonymousNotAllowed.as_str()),
            ));
            return steps;
        }
        steps.extend(
            self.requirements
                .explain(identity, request, &self.name, now),
        );
        steps
    }
}

/// The configured providers as the routes' compilation looks them up: by name, and the challenge of each
/// distinct provider list made once (a policy of 100,000 routes and 2,000 providers compiles in time
/// linear in their sum, and the routes share their challenges).
struct Known<'a> {
    providers: &'a [ProviderInfo<'a>],
    by_name: std::collections::HashMap<&'a str, usize>,
    realm: &'a str,
    challenges: std::collections::HashMap<Option<Box<[usize]>>, Arc<Challenge>>,
}

// === impl Known ===

impl<'a> Known<'a> {
    fn new(providers: &'a [ProviderInfo<'a>], realm: &'a str) -> Known<'a> {
        Known {
            providers,
            by_name: providers
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name, i))
                .collect(),
            realm,
            challenges: std::collections::HashMap::new(),
        }
    }

    /// The names, for a problem's message.
    fn names(&self) -> String {
        self.providers
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn challenge(&mut self, allowed: Option<&[usize]>) -> Arc<Challenge> {
        if let Some(challenge) = self.challenges.get(&allowed.map(Box::from)) {
            return Arc::clone(challenge);
        }
        let challenge = Arc::new(Challenge::new(self.providers, allowed, self.realm));
        self.challenges
            .insert(allowed.map(Box::from), Arc::clone(&challenge));
        challenge
    }
}

/// The parts a route and the default route share.
struct RouteParts<'c> {
    providers: Option<&'c [String]>,
    allow_anonymous: bool,
    mode: Mode,
    require: &'c RequireConfig,
    deny: &'c DenyConfig,
    resource: Option<&'c str>,
    identity_token: Option<&'c RouteIdentityToken>,
    claims_in_metadata: Option<bool>,
}

// === impl RouteParts ===

impl RouteParts<'_> {
    fn compile(
        self,
        problems: &mut Problems,
        path: &str,
        known: &mut Known<'_>,
        namespaces: &Namespaces,
    ) -> Route {
        if let Some(providers) = self.providers {
            if providers.is_empty() {
                problems.add(
                    format!("{path}.providers"),
                    "must not be empty: omit it to accept every provider",
                );
            }
            for (i, name) in providers.iter().enumerate() {
                if !known.by_name.contains_key(name.as_str()) {
                    problems.add(
                        format!("{path}.providers[{i}]"),
                        format!("unknown provider `{name}` (configured: {})", known.names()),
                    );
                } else if providers[..i].contains(name) {
                    problems.add(format!("{path}.providers[{i}]"), "is listed twice");
                }
            }
        }
        let requirements = Requirements::compile(
            problems,
            &format!("{path}.require"),
            self.require,
            namespaces,
        );
        if self.allow_anonymous && !requirements.is_empty() {
            problems.add(
                format!("{path}.allow_anonymous"),
                "cannot be combined with require: an anonymous request has nothing to check",
            );
        }
        // In declared order, each once (the chain relies on it).
        let provider_indices: Option<Box<[usize]>> = self.providers.map(|wanted| {
            let mut indices: Vec<usize> = wanted
                .iter()
                .filter_map(|w| known.by_name.get(w.as_str()).copied())
                .collect();
            indices.sort_unstable();
            indices.dedup();
            indices.into()
        });
        Route {
            name: DEFAULT_ROUTE.into(),
            index: 0,
            matcher: Matcher::default(),
            providers: self.providers.map(Into::into),
            challenge: known.challenge(provider_indices.as_deref()),
            provider_indices,
            allow_anonymous: self.allow_anonymous,
            mode: self.mode,
            requirements,
            reads_any_header: false,
            deny: DenySettings::compile(problems, &format!("{path}.deny"), self.deny),
            resource_metadata: self
                .resource
                .and_then(crate::config::resources::metadata_path)
                .map(Into::into),
            identity_token: match self.identity_token {
                None | Some(RouteIdentityToken::Enabled(true)) => RouteToken::Default,
                Some(RouteIdentityToken::Enabled(false)) => RouteToken::Off,
                Some(RouteIdentityToken::Audience(a)) => {
                    RouteToken::Audience(a.audience.as_str().into())
                }
            },
            claims_in_metadata: self.claims_in_metadata,
        }
    }
}

fn check_route_name(problems: &mut Problems, path: &str, name: &str, seen: &mut HashSet<String>) {
    let path = format!("{path}.name");
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if !valid {
        problems.add(path, "must be letters, digits, `.`, `_`, `-` or `:`");
    } else if name == DEFAULT_ROUTE {
        problems.add(path, "`default` is the name of default_route");
    } else if !seen.insert(name.to_owned()) {
        problems.add(path, format!("another route is also named `{name}`"));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::testing::{identity, policy};
    use super::*;
    use crate::request::Headers;

    const NOW: i64 = 1_700_000_000;

    fn view<'a>(method: &'a str, path: &'a str, host: &'a str) -> RequestView<'a> {
        RequestView::new(method, path, host, Headers::Pairs(&[]), "")
    }

    const ROUTES: &str = r#"
routes:
  - name: kill-switch
    match: {path: /kill, methods: [POST]}
    require: {permissions: {all_of: [kill_switch:execute]}}
  - name: api
    match: {path_prefix: /api/}
    providers: [auth0]
    mode: permissive
  - name: billing
    match: {context_extensions: {service: billing}}
    require: {scopes: {all_of: [billing]}}
  - name: public
    match: {path_prefix: /}
    allow_anonymous: true
default_route:
  require: {principal: human}
"#;

    #[test]
    fn first_match_wins_else_default() {
        let p = policy(ROUTES);
        assert_eq!(p.route(&view("POST", "/kill", "h")).name(), "kill-switch");
        assert_eq!(p.route(&view("GET", "/kill", "h")).name(), "public");
        assert_eq!(p.route(&view("POST", "/api/kill", "h")).name(), "api");
        assert_eq!(p.route(&view("GET", "relative", "h")).name(), "default");

        let billing = HashMap::from([("service".to_owned(), "billing".to_owned())]);
        let routed = view("GET", "/api/x", "h").with_context_extensions(&billing);
        assert_eq!(p.route(&routed).name(), "api");
        let routed = view("GET", "/invoices", "h").with_context_extensions(&billing);
        assert_eq!(p.route(&routed).name(), "billing");
    }

    #[test]
    fn a_route_is_found_by_name_the_default_included() {
        let p = policy(ROUTES);
        assert_eq!(p.route_named("billing").map(Route::name), Some("billing"));
        assert_eq!(p.route_named("default").map(Route::name), Some("default"));
        assert!(p.route_named("Billing").is_none());
        assert!(p.route_named("nowhere").is_none());
    }

    #[test]
    fn route_settings_and_mode_override() {
        let p = policy(ROUTES);
        let api = p.route(&view("GET", "/api/x", "h"));
        assert_eq!(api.providers(), Some(&["auth0".to_owned()][..]));
        assert_eq!(api.mode(), Mode::Permissive);
        assert!(!api.allow_anonymous());
        let public = p.route(&view("GET", "/x", "h"));
        assert_eq!(public.providers(), None);
        assert_eq!(public.mode(), Mode::Enforce);
        assert!(public.allow_anonymous());

        let global =
            policy("{mode: permissive, routes: [{name: a, match: {path: /a}, mode: enforce}]}");
        assert_eq!(global.route(&view("GET", "/a", "h")).mode(), Mode::Enforce);
        assert_eq!(
            global.route(&view("GET", "/b", "h")).mode(),
            Mode::Permissive
        );
    }

    #[test]
    fn empty_policy_is_any_provider_and_no_requirement() {
        let p = policy("{}");
        let route = p.route(&view("DELETE", "/anything", "h"));
        assert_eq!(route.name(), DEFAULT_ROUTE);
        assert_eq!(route.providers(), None);
        assert!(!route.allow_anonymous());
        assert_eq!(
            route.evaluate(&identity("", json!({})), &view("GET", "/", "h"), NOW),
            Ok(())
        );
    }

    #[test]
    fn evaluate_checks_the_provider_first() {
        let p = policy(ROUTES);
        let api = p.route(&view("GET", "/api/x", "h"));
        let mut github = identity("", json!({}));
        github.provider = "github".into();
        let unmet = api
            .evaluate(&github, &view("GET", "/api/x", "h"), NOW)
            .unwrap_err();
        assert_eq!(
            (unmet.as_str(), unmet.status(), unmet.error_code()),
            ("provider_not_allowed", 401, "invalid_token")
        );
        assert_eq!(
            api.evaluate(&identity("", json!({})), &view("GET", "/api/x", "h"), NOW),
            Ok(())
        );
    }

    #[test]
    fn anonymous_identities_pass_only_where_allowed() {
        let p = policy(ROUTES);
        let nobody = Identity {
            kind: PrincipalKind::Anonymous,
            subject: None,
            ..identity("", json!({}))
        };
        let public = view("GET", "/x", "h");
        assert_eq!(p.route(&public).evaluate(&nobody, &public, NOW), Ok(()));
        let kill = view("POST", "/kill", "h");
        let unmet = p.route(&kill).evaluate(&nobody, &kill, NOW).unwrap_err();
        assert_eq!(
            (unmet.as_str(), unmet.status()),
            ("anonymous_not_allowed", 401)
        );
        assert_eq!(
            p.route(&kill).explain(&nobody, &kill, NOW),
            [ExplainStep::new(
                "allow_anonymous".into(),
                false,
                Some("anonymous_not_allowed")
            )]
        );
    }

    #[test]
    fn evaluate_answers_403_with_the_missing_permission() {
        let p = policy(ROUTES);
        let request = view("POST", "/kill", "h");
        let unmet = p
            .route(&request)
            .evaluate(
                &identity("", json!({"permissions": ["read:portfolio"]})),
                &request,
                NOW,
            )
            .unwrap_err();
        assert_eq!(unmet.status(), 403);
        assert_eq!(unmet.error_code(), "insufficient_scope");
        assert_eq!(unmet.description(), "the token lacks a required permission");
        assert_eq!(
            unmet.challenge_params().collect::<Vec<_>>(),
            [("scope", "kill_switch:execute")]
        );
    }

    #[test]
    fn explain_shows_tried_routes_and_requirements() {
        let p = policy(ROUTES);
        let request = view("GET", "/kill", "h");
        let choice = p.explain_route(&request);
        assert_eq!(choice.route, "public");
        let tried: Vec<(&str, bool)> = choice
            .tried
            .iter()
            .map(|t| (t.route.as_str(), t.matched))
            .collect();
        assert_eq!(
            tried,
            [
                ("kill-switch", false),
                ("api", false),
                ("billing", false),
                ("public", true)
            ]
        );
        assert_eq!(
            choice.tried[0].conditions,
            [
                ExplainStep::new("path /kill".into(), true, None),
                ExplainStep::new("methods POST".into(), false, None),
            ]
        );
        let json = serde_json::to_value(&choice).unwrap();
        assert_eq!(json["mode"], "enforce");
        assert_eq!(
            json["tried"][3]["conditions"][0],
            json!({"check": "path_prefix /", "passed": true})
        );

        let api = p.route(&view("GET", "/api/x", "h"));
        let mut github = identity("", json!({}));
        github.provider = "github".into();
        assert_eq!(
            api.explain(&github, &request, NOW),
            [ExplainStep::new(
                "provider one of [auth0]".into(),
                false,
                Some("provider_not_allowed")
            )]
        );
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let config: PolicyConfig = serde_yaml_ng::from_str(
            r#"
claims_namespace: https://example.com
routes:
  - name: a
    match: {path: /a}
    providers: [auth0, okta, auth0]
  - name: a
    match: {path: /b, path_prefix: /b/}
    allow_anonymous: true
    require: {scopes: {all_of: [x]}}
  - name: default
    match: {path_glob: '/t/x*/admin'}
    require: {step_up: {max_age: 0}}
    deny: {status: 500}
  - name: "bad name"
    match: {}
default_route:
  providers: []
"#,
        )
        .unwrap();
        let providers = ["auth0", "github"].map(|name| ProviderInfo {
            name,
            challenge_scheme: Some("Bearer"),
        });
        let found = Policy::compile(&config, &providers, "portcullis")
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let expected = [
            ("claims_namespace", "must be a URL or URN ending with `/` or `:`, e.g. `https://example.com/` (claim names are appended to it)"),
            ("routes[0].providers[1]", "unknown provider `okta` (configured: auth0, github)"),
            ("routes[0].providers[2]", "is listed twice"),
            ("routes[1].name", "another route is also named `a`"),
            ("routes[1].match", "give at most one of path, path_prefix, path_glob"),
            ("routes[1].allow_anonymous", "cannot be combined with require: an anonymous request has nothing to check"),
            ("routes[2].name", "`default` is the name of default_route"),
            ("routes[2].match.path_glob", "`*` must be a whole segment, not part of `x*`"),
            ("routes[2].require.step_up.max_age", "must be at least 1 second"),
            ("routes[2].deny.status", "must be a 4xx status"),
            ("routes[3].name", "must be letters, digits, `.`, `_`, `-` or `:`"),
            ("routes[3].match", "must give at least one of host, path, path_prefix, path_glob, methods, headers, context_extensions (default_route takes every other request)"),
            ("default_route.providers", "must not be empty: omit it to accept every provider"),
        ];
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_yaml_ng::from_str::<PolicyConfig>(
            "routes: [{name: a, match: {path: /a}, requires: {}}]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `requires`"), "{err}");
        let err = serde_yaml_ng::from_str::<PolicyConfig>("{mode: strict}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `strict`"), "{err}");
    }

    /// A small deterministic generator (xorshift64*): the property test needs no dependency and
    /// reproduces from its seed.
    struct Draw(u64);

    impl Draw {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    /// The linear walk the index replaces: the first route whose `match` fits, else the default.
    fn walked<'p>(p: &'p Policy, request: &RequestView<'_>, canonical: bool) -> &'p Route {
        p.routes
            .iter()
            .find(|r| match canonical {
                false => r.matcher.matches(request),
                true => r.matcher.matches_canonical(request),
            })
            .unwrap_or(&p.default)
    }

    #[test]
    fn the_route_index_chooses_what_the_linear_walk_chooses() {
        const HOSTS: &[&str] = &[
            "a.example.com",
            "b.example.com",
            "example.com",
            "*.example.com",
            "*.b.example.com",
            "api.tenant-1.io",
            "*.tenant-1.io",
            "x.y.z.example.com",
        ];
        const PATHS: &[&str] = &[
            "/", "/a", "/a/", "/a/b", "/A", "/api", "/api/", "/api/v1", "/ap", "/t1/", "/t2/x",
            "/admin", "/Admin", "/a/b/c",
        ];
        const GLOBS: &[&str] = &["/a/*", "/*/b", "/api/**", "/t1/*/x", "/**", "/A/*"];
        const REQUEST_HOSTS: &[&str] = &[
            "a.example.com",
            "A.Example.com",
            "b.example.com:8443",
            "c.b.example.com",
            "example.com",
            "example.com.",
            "api.tenant-1.io",
            "w.tenant-1.io",
            "tenant-1.io",
            "other.org",
            "x.y.z.example.com",
            "[::1]:80",
            "",
        ];
        const REQUEST_PATHS: &[&str] = &[
            "/",
            "//",
            "/a",
            "/a/",
            "/a/b",
            "/a/b/",
            "/A",
            "/a;x",
            "/a%2Fb",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/x",
            "/apix",
            "/ap",
            "/t1/",
            "/t1/q/x",
            "/t2/x",
            "/admin",
            "/Admin",
            "/admin.",
            "/x/b",
            "/a/b/c",
            "relative",
            "",
        ];
        const METHODS: &[&str] = &["GET", "POST"];
        let mut draw = Draw(0x9E37_79B9_7F4A_7C15);
        let mut compared = 0;
        for set in 0..60 {
            let count = 16 + (draw.next() % 48) as usize;
            let mut yaml = String::from("routes:\n");
            for r in 0..count {
                let mut fields = Vec::new();
                if draw.chance(60) {
                    fields.push(format!("host: '{}'", draw.pick(HOSTS)));
                }
                match draw.next() % 4 {
                    0 => fields.push(format!("path: '{}'", draw.pick(PATHS))),
                    1 => fields.push(format!("path_prefix: '{}'", draw.pick(PATHS))),
                    2 => fields.push(format!("path_glob: '{}'", draw.pick(GLOBS))),
                    _ => {}
                }
                if fields.is_empty() || draw.chance(20) {
                    fields.push(format!("methods: [{}]", draw.pick(METHODS)));
                }
                yaml.push_str(&format!(
                    "  - {{name: r{r}, match: {{{}}}}}\n",
                    fields.join(", ")
                ));
            }
            let p = policy(&yaml);
            assert!(
                p.index.is_some(),
                "set {set}: indexed from {INDEX_FROM} routes"
            );
            for host in REQUEST_HOSTS {
                for path in REQUEST_PATHS {
                    for method in METHODS {
                        let request = view(method, path, host);
                        assert_eq!(
                            p.route(&request).name(),
                            walked(&p, &request, false).name(),
                            "set {set}: {method} {host}{path}\n{yaml}"
                        );
                        assert_eq!(
                            p.first_route(&request, true).name(),
                            walked(&p, &request, true).name(),
                            "set {set} (canonical): {method} {host}{path}\n{yaml}"
                        );
                        compared += 2;
                    }
                }
            }
        }
        assert!(compared > 50_000, "{compared}");
    }

    #[test]
    fn a_host_deeper_than_the_index_is_walked() {
        let mut yaml = String::from("routes:\n");
        for r in 0..20 {
            yaml.push_str(&format!(
                "  - {{name: r{r}, match: {{host: '*.h{r}.example', path: /x}}}}\n"
            ));
        }
        yaml.push_str("  - {name: deep, match: {host: '*.example', path: /x}}\n");
        let p = policy(&yaml);
        let deep = format!("{}example", "l.".repeat(40));
        assert_eq!(p.route(&view("GET", "/x", &deep)).name(), "deep");
        assert_eq!(p.route(&view("GET", "/x", "a.h3.example")).name(), "r3");
    }
}
