//! What an authenticated identity must have on a route: the audience (RFC 8707) and a DPoP binding (RFC
//! 9449), principal kind, the delegation rules (RFC 8693 `act`), scopes, Auth0 RBAC permissions, claims,
//! organization, expressions, the `any_of` and `not` combinators over groups of requirements, and
//! step-up authentication, compiled once and checked in that order. A delegated token is refused (403)
//! on a route that does not set `delegation.allow: true`.
//!
//! The 403 requirements come before step-up: authenticating again cannot grant a missing permission, so
//! a client is told about that first.

use std::sync::Arc;

use serde_json::Value as Json;

use super::claims::{ClaimPath, ClaimRule, Namespaces};
use super::explain::ExplainStep;
use super::expression::{Expression, Failure, HeaderReads, Input};
use crate::config::policy::{
    DelegationConfig, GrantsConfig, OrganizationConfig, Principal, RequireConfig, StepUpConfig,
};
use crate::config::Problems;
use crate::decision::{Unmet, UnmetReason};
use crate::identity::{Identity, PrincipalKind};
use crate::request::is_header_name;
use crate::request::RequestView;

/// How far in the future an `auth_time` may be (clock skew) before a token is treated as not fresh.
const AUTH_TIME_LEEWAY_SECONDS: i64 = 60;

/// A route's requirements, in checking order.
#[derive(Debug, Default)]
pub(super) struct Requirements {
    list: Box<[Requirement]>,
    /// No `delegation.allow: true`: a delegated token is refused.
    refuse_delegated: bool,
}

#[derive(Debug)]
enum Requirement {
    /// `audience`: `aud` contains exactly this (RFC 8707).
    Audience(Box<str>),
    /// `dpop: true`.
    Dpop,
    /// `Human` or `Machine`.
    Principal(Principal),
    /// One `delegation` rule; only delegated tokens are checked.
    Delegation(Delegation),
    Grants(Grants),
    Claim(ClaimRule),
    Organization(Organization),
    Expression(Box<Expression>),
    /// At least one group holds.
    AnyOf(Box<[Requirements]>),
    /// The group does not hold.
    Not(Requirements),
    StepUp(StepUp),
}

/// One rule over scopes or permissions.
#[derive(Debug)]
struct Grants {
    source: Source,
    rule: Rule,
    names: Box<[Box<str>]>,
    /// `names` space-separated, for the `scope` challenge parameter of `any_of`.
    joined: Arc<str>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    /// `Identity::scopes` (from `scope` or `scp`).
    Scopes,
    /// The `permissions` claim (Auth0 RBAC): an array, or a space-separated string.
    Permissions,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `all_of`.
    All,
    /// `any_of`.
    Any,
    /// `none_of`.
    Excluded,
}

#[derive(Debug)]
struct Organization {
    claim: ClaimPath,
    source: OrgSource,
}

#[derive(Debug)]
enum OrgSource {
    OneOf(Box<[Box<str>]>),
    Header(Box<str>),
    PathSegment(usize),
}

#[derive(Debug)]
enum Delegation {
    MaxDepth(usize),
    Actors(Box<[Box<str>]>),
    MaxLifetime(i64),
    ForbidPermissions(Box<[Box<str>]>),
}

#[derive(Debug)]
struct StepUp {
    acr: Option<Box<[Box<str>]>>,
    amr: Box<[Box<str>]>,
    max_age: Option<i64>,
    acr_values: Option<Arc<str>>,
    max_age_text: Option<Arc<str>>,
}

// === impl Requirements ===

impl Requirements {
    pub(super) fn compile(
        problems: &mut Problems,
        path: &str,
        config: &RequireConfig,
        namespaces: &Namespaces,
    ) -> Requirements {
        let mut list = Vec::new();
        if let Some(audience) = &config.audience {
            if audience.is_empty() || audience.chars().any(char::is_control) {
                problems.add(format!("{path}.audience"), "must be one non-empty line");
            }
            list.push(Requirement::Audience(audience.as_str().into()));
        }
        if config.dpop {
            list.push(Requirement::Dpop);
        }
        match config.principal {
            Principal::Any => {}
            kind => list.push(Requirement::Principal(kind)),
        }
        let allow_delegated = config.delegation.as_ref().is_some_and(|d| d.allow);
        if let Some(delegation) = &config.delegation {
            Delegation::compile(
                problems,
                &format!("{path}.delegation"),
                delegation,
                &mut list,
            );
        }
        for (key, source, grants) in [
            ("scopes", Source::Scopes, &config.scopes),
            ("permissions", Source::Permissions, &config.permissions),
        ] {
            if let Some(grants) = grants {
                Grants::compile(
                    problems,
                    &format!("{path}.{key}"),
                    source,
                    grants,
                    &mut list,
                );
            }
        }
        if let Some(claims) = &config.claims {
            if claims.is_empty() {
                problems.add(format!("{path}.claims"), "must not be empty");
            }
            for (i, claim) in claims.iter().enumerate() {
                let field = format!("{path}.claims[{i}]");
                if let Some(rule) = ClaimRule::compile(problems, &field, claim, namespaces) {
                    list.push(Requirement::Claim(rule));
                }
            }
        }
        if let Some(org) = &config.organization {
            let field = format!("{path}.organization");
            if let Some(org) = Organization::compile(problems, &field, org, namespaces) {
                list.push(Requirement::Organization(org));
            }
        }
        if let Some(source) = &config.expression {
            let field = format!("{path}.expression");
            let org = ClaimPath::plain_then_namespaced("org_id", namespaces);
            if let Some(e) = Expression::compile(problems, &field, source, org) {
                list.push(Requirement::Expression(Box::new(e)));
            }
        }
        if let Some(groups) = &config.any_of {
            if groups.is_empty() {
                problems.add(format!("{path}.any_of"), "must not be empty");
            }
            let groups = groups
                .iter()
                .enumerate()
                .map(|(i, group)| {
                    group_of(problems, &format!("{path}.any_of[{i}]"), group, namespaces)
                })
                .collect();
            list.push(Requirement::AnyOf(groups));
        }
        if let Some(group) = &config.not {
            let group = group_of(problems, &format!("{path}.not"), group, namespaces);
            list.push(Requirement::Not(group));
        }
        if let Some(step_up) = &config.step_up {
            if let Some(step_up) = StepUp::compile(problems, &format!("{path}.step_up"), step_up) {
                list.push(Requirement::StepUp(step_up));
            }
        }
        Requirements {
            list: list.into(),
            refuse_delegated: !allow_delegated,
        }
    }

    /// Adds the request headers these requirements read, in every group (`any_of`, `not`) and expression:
    /// a header read here that arrives on several lines is refused before any of them is judged.
    pub(super) fn header_reads(&self, reads: &mut HeaderReads) {
        for requirement in &*self.list {
            match requirement {
                Requirement::Organization(Organization {
                    source: OrgSource::Header(name),
                    ..
                }) if !reads.names.contains(name) => reads.names.push(name.clone()),
                Requirement::Expression(expression) => {
                    let read = expression.header_reads();
                    reads.any |= read.any;
                    for name in &read.names {
                        if !reads.names.contains(name) {
                            reads.names.push(name.clone());
                        }
                    }
                }
                Requirement::AnyOf(groups) => {
                    for group in &**groups {
                        group.header_reads(reads);
                    }
                }
                Requirement::Not(group) => group.header_reads(reads),
                _ => {}
            }
        }
    }

    /// No requirement was configured (a delegated token is still refused).
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The first requirement not met, if any. `route` is the route's name (the `route.name` of
    /// expressions).
    pub(super) fn check(
        &self,
        identity: &Identity,
        request: &RequestView<'_>,
        route: &str,
        now: i64,
    ) -> Result<(), Unmet> {
        if self.refuse_delegated && !identity.actors.is_empty() {
            return Err(Unmet::new(UnmetReason::DelegationNotAllowed));
        }
        let input = Input {
            identity,
            request,
            route,
            now,
        };
        self.check_input(&input)
    }

    fn check_input(&self, input: &Input<'_>) -> Result<(), Unmet> {
        self.list.iter().try_for_each(|r| r.check(input))
    }

    /// Every requirement and whether it is met, for `explain`: an expression with its inputs and value,
    /// a combinator followed by the requirements of its groups.
    pub(super) fn explain(
        &self,
        identity: &Identity,
        request: &RequestView<'_>,
        route: &str,
        now: i64,
    ) -> Vec<ExplainStep> {
        let mut steps = Vec::new();
        if self.refuse_delegated && !identity.actors.is_empty() {
            steps.push(ExplainStep::new(
                "delegation not allowed (no delegation.allow: true)".to_owned(),
                false,
                Some(UnmetReason::DelegationNotAllowed.as_str()),
            ));
        }
        let input = Input {
            identity,
            request,
            route,
            now,
        };
        self.explain_into(&input, "", &mut steps);
        steps
    }

    fn explain_into(&self, input: &Input<'_>, prefix: &str, steps: &mut Vec<ExplainStep>) {
        for r in self.list.iter() {
            let result = r.check(input);
            let mut step = ExplainStep::new(
                format!("{prefix}{}", r.describe()),
                result.is_ok(),
                result.err().map(|u| u.as_str()),
            );
            if let Requirement::Expression(e) = r {
                step.value = Some(match e.evaluate(input) {
                    Ok(()) => "true".to_owned(),
                    Err(Failure::False) => "false".to_owned(),
                    Err(Failure::Error(why)) => format!("error: {why}"),
                });
                step.inputs = Some(e.inputs(input));
            }
            steps.push(step);
            match r {
                Requirement::AnyOf(groups) => {
                    for (i, group) in groups.iter().enumerate() {
                        group.explain_into(input, &format!("{prefix}any_of[{i}]: "), steps);
                    }
                }
                Requirement::Not(group) => {
                    group.explain_into(input, &format!("{prefix}not: "), steps);
                }
                _ => {}
            }
        }
    }
}

/// A group under `any_of` or `not`, which must require something.
fn group_of(
    problems: &mut Problems,
    path: &str,
    config: &RequireConfig,
    namespaces: &Namespaces,
) -> Requirements {
    let mut group = Requirements::compile(problems, path, config, namespaces);
    if group.is_empty() && *config == RequireConfig::default() {
        problems.add(path, "must give at least one requirement");
    }
    if config.delegation.as_ref().is_some_and(|d| d.allow) {
        problems.add(
            format!("{path}.delegation.allow"),
            "whether delegated tokens are taken is the route's call: set it in the route's `require`",
        );
    }
    // Delegated tokens are refused or taken by the route, before its groups are asked.
    group.refuse_delegated = false;
    group
}

// === impl Requirement ===

impl Requirement {
    fn check(&self, input: &Input<'_>) -> Result<(), Unmet> {
        let Input {
            identity,
            request,
            now,
            ..
        } = *input;
        match self {
            Requirement::Audience(audience) if has_audience(identity, audience) => Ok(()),
            Requirement::Audience(_) => Err(Unmet::new(UnmetReason::AudienceMismatch)),
            Requirement::Dpop if identity.dpop_bound => Ok(()),
            Requirement::Dpop => Err(Unmet::new(UnmetReason::DpopRequired)),
            Requirement::Delegation(rule) => rule.check(identity),
            Requirement::Principal(Principal::Human) if identity.kind == PrincipalKind::Human => {
                Ok(())
            }
            Requirement::Principal(Principal::Machine)
                if identity.kind == PrincipalKind::Machine =>
            {
                Ok(())
            }
            Requirement::Principal(Principal::Machine) => {
                Err(Unmet::new(UnmetReason::HumanNotAllowed))
            }
            Requirement::Principal(_) => Err(Unmet::new(UnmetReason::MachineNotAllowed)),
            Requirement::Grants(grants) => grants.check(identity),
            Requirement::Claim(rule) if rule.holds(&identity.claims) => Ok(()),
            Requirement::Claim(_) => Err(Unmet::new(UnmetReason::ClaimMismatch)),
            Requirement::Organization(org) if org.holds(identity, request) => Ok(()),
            Requirement::Organization(_) => Err(Unmet::new(UnmetReason::WrongOrganization)),
            Requirement::Expression(e) => match e.evaluate(input) {
                Ok(()) => Ok(()),
                Err(Failure::False) => Err(Unmet::new(UnmetReason::ExpressionFalse)),
                Err(Failure::Error(_)) => Err(Unmet::new(UnmetReason::ExpressionError)),
            },
            // The first group's answer when none holds: groups are listed in order of preference.
            Requirement::AnyOf(groups) => {
                let mut first = None;
                for group in groups.iter() {
                    match group.check_input(input) {
                        Ok(()) => return Ok(()),
                        Err(unmet) => {
                            first.get_or_insert(unmet);
                        }
                    }
                }
                Err(first.unwrap_or_else(|| Unmet::new(UnmetReason::ExcludedByNot)))
            }
            Requirement::Not(group) => match group.check_input(input) {
                Ok(()) => Err(Unmet::new(UnmetReason::ExcludedByNot)),
                Err(_) => Ok(()),
            },
            Requirement::StepUp(step_up) => step_up.check(identity, now),
        }
    }

    fn describe(&self) -> String {
        match self {
            Requirement::Audience(audience) => format!("audience {audience}"),
            Requirement::Dpop => "dpop-bound token".to_owned(),
            Requirement::Delegation(Delegation::MaxDepth(n)) => {
                format!("delegation max_depth {n}")
            }
            Requirement::Delegation(Delegation::Actors(actors)) => {
                format!("delegation actors one of [{}]", actors.join(", "))
            }
            Requirement::Delegation(Delegation::MaxLifetime(s)) => {
                format!("delegation max_lifetime {s}s")
            }
            Requirement::Delegation(Delegation::ForbidPermissions(p)) => {
                format!("delegation forbid_permissions [{}]", p.join(", "))
            }
            Requirement::Principal(Principal::Machine) => "principal machine".to_owned(),
            Requirement::Principal(_) => "principal human".to_owned(),
            Requirement::Grants(g) => {
                let source = match g.source {
                    Source::Scopes => "scopes",
                    Source::Permissions => "permissions",
                };
                let rule = match g.rule {
                    Rule::All => "all_of",
                    Rule::Any => "any_of",
                    Rule::Excluded => "none_of",
                };
                format!("{source} {rule} [{}]", g.names.join(", "))
            }
            Requirement::Claim(rule) => rule.describe(),
            Requirement::Organization(org) => {
                let claim = org.claim.describe();
                match &org.source {
                    OrgSource::OneOf(orgs) => {
                        format!("organization ({claim}) one of [{}]", orgs.join(", "))
                    }
                    OrgSource::Header(h) => format!("organization ({claim}) equals header {h}"),
                    OrgSource::PathSegment(n) => {
                        format!("organization ({claim}) equals path segment {n}")
                    }
                }
            }
            Requirement::Expression(e) => format!("expression {}", e.source()),
            Requirement::AnyOf(groups) => format!("any_of {} groups", groups.len()),
            Requirement::Not(_) => "not".to_owned(),
            Requirement::StepUp(s) => {
                let mut parts = Vec::new();
                if let Some(acr) = &s.acr {
                    parts.push(format!("acr one of [{}]", acr.join(", ")));
                }
                if !s.amr.is_empty() {
                    parts.push(format!("amr all of [{}]", s.amr.join(", ")));
                }
                if let Some(max_age) = s.max_age {
                    parts.push(format!("auth_time within {max_age}s"));
                }
                format!("step_up {}", parts.join(", "))
            }
        }
    }
}

/// RFC 8707 / RFC 7519 §4.1.3: `aud` (a string or an array) contains exactly `audience`.
fn has_audience(identity: &Identity, audience: &str) -> bool {
    match identity.claims.get("aud") {
        Some(Json::String(aud)) => aud == audience,
        Some(Json::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

// === impl Delegation ===

impl Delegation {
    fn compile(
        problems: &mut Problems,
        path: &str,
        config: &DelegationConfig,
        out: &mut Vec<Requirement>,
    ) {
        let has_rules = config.max_depth.is_some()
            || config.actors.is_some()
            || config.max_lifetime_seconds.is_some()
            || config.forbid_permissions.is_some();
        if !config.allow && has_rules {
            problems.add(
                format!("{path}.allow"),
                "the delegation rules apply to delegated tokens, which need `allow: true`",
            );
        }
        if let Some(depth) = config.max_depth {
            if depth == 0 {
                problems.add(
                    format!("{path}.max_depth"),
                    "must be at least 1 (omit `allow` to refuse delegated tokens)",
                );
            }
            out.push(Requirement::Delegation(Delegation::MaxDepth(depth)));
        }
        if let Some(actors) = &config.actors {
            if actors.is_empty() {
                problems.add(format!("{path}.actors"), "must not be empty");
            }
            if actors
                .iter()
                .any(|a| a.is_empty() || a.chars().any(char::is_control))
            {
                problems.add(
                    format!("{path}.actors"),
                    "must be non-empty single-line names",
                );
            }
            let actors = actors.iter().map(|a| a.as_str().into()).collect();
            out.push(Requirement::Delegation(Delegation::Actors(actors)));
        }
        if let Some(seconds) = config.max_lifetime_seconds {
            if seconds == 0 {
                problems.add(format!("{path}.max_lifetime_seconds"), "must be at least 1");
            }
            let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
            out.push(Requirement::Delegation(Delegation::MaxLifetime(seconds)));
        }
        if let Some(list) = &config.forbid_permissions {
            let names = names(problems, &format!("{path}.forbid_permissions"), list);
            out.push(Requirement::Delegation(Delegation::ForbidPermissions(
                names,
            )));
        }
    }

    /// A token that is not delegated passes every delegation rule.
    fn check(&self, identity: &Identity) -> Result<(), Unmet> {
        let actors = &identity.actors;
        if actors.is_empty() {
            return Ok(());
        }
        let holds = match self {
            Delegation::MaxDepth(max) => actors.len() <= *max,
            Delegation::Actors(allowed) => {
                actors.iter().all(|a| allowed.iter().any(|x| **x == **a))
            }
            Delegation::MaxLifetime(max) => identity
                .claims
                .get("iat")
                .and_then(Json::as_f64)
                .is_some_and(|iat| (identity.expires_at as f64 - iat) <= *max as f64),
            Delegation::ForbidPermissions(names) => {
                !names.iter().any(|n| has_permission(identity, n))
            }
        };
        let reason = match self {
            Delegation::MaxDepth(_) => UnmetReason::DelegationTooDeep,
            Delegation::Actors(_) => UnmetReason::ActorNotAllowed,
            Delegation::MaxLifetime(_) => UnmetReason::DelegationTooLong,
            Delegation::ForbidPermissions(_) => UnmetReason::DelegatedPermissionForbidden,
        };
        if holds {
            Ok(())
        } else {
            Err(Unmet::new(reason))
        }
    }
}

/// The `permissions` claim (Auth0 RBAC: an array, or a space-separated string) holds `name`.
fn has_permission(identity: &Identity, name: &str) -> bool {
    match identity.claims.get("permissions") {
        Some(Json::Array(items)) => items.iter().any(|p| p.as_str() == Some(name)),
        Some(Json::String(list)) => list.split_ascii_whitespace().any(|p| p == name),
        _ => false,
    }
}

/// A scope or permission name, as RFC 6749 §3.3 allows: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
/// This also keeps it safe inside the challenge's quoted `scope` attribute.
fn is_scope_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Checks a list of names that will be sent in a challenge, reporting empty lists and bad names.
fn names(problems: &mut Problems, path: &str, list: &[String]) -> Box<[Box<str>]> {
    if list.is_empty() {
        problems.add(path, "must not be empty");
    }
    for (i, name) in list.iter().enumerate() {
        if !is_scope_token(name) {
            problems.add(
                format!("{path}[{i}]"),
                "must be a non-empty name of printable ASCII without spaces, `\"` or `\\`",
            );
        }
    }
    list.iter().map(|n| n.as_str().into()).collect()
}

// === impl Grants ===

impl Grants {
    fn compile(
        problems: &mut Problems,
        path: &str,
        source: Source,
        config: &GrantsConfig,
        out: &mut Vec<Requirement>,
    ) {
        let rules = [
            ("all_of", Rule::All, &config.all_of),
            ("any_of", Rule::Any, &config.any_of),
            ("none_of", Rule::Excluded, &config.none_of),
        ];
        if rules.iter().all(|(_, _, list)| list.is_none()) {
            problems.add(path, "give at least one of all_of, any_of, none_of");
        }
        for (key, rule, list) in rules {
            let Some(list) = list else { continue };
            let names = names(problems, &format!("{path}.{key}"), list);
            out.push(Requirement::Grants(Grants {
                source,
                rule,
                joined: names.join(" ").into(),
                names,
            }));
        }
    }

    fn has(&self, identity: &Identity, name: &str) -> bool {
        match self.source {
            Source::Scopes => identity.scopes.split_ascii_whitespace().any(|s| s == name),
            Source::Permissions => has_permission(identity, name),
        }
    }

    /// RFC 6750 §3.1: the `scope` attribute names what is missing: for `all_of` the names not granted, for
    /// `any_of` every name (any one would do); `none_of` has nothing to obtain.
    fn check(&self, identity: &Identity) -> Result<(), Unmet> {
        let (missing, forbidden) = match self.source {
            Source::Scopes => (UnmetReason::MissingScope, UnmetReason::ForbiddenScope),
            Source::Permissions => (
                UnmetReason::MissingPermission,
                UnmetReason::ForbiddenPermission,
            ),
        };
        let has = |name: &str| self.has(identity, name);
        let scope = match self.rule {
            Rule::All if self.names.iter().all(|n| has(n)) => return Ok(()),
            Rule::Any if self.names.iter().any(|n| has(n)) => return Ok(()),
            Rule::Excluded if !self.names.iter().any(|n| has(n)) => return Ok(()),
            Rule::Excluded => return Err(Unmet::new(forbidden)),
            Rule::Any => Arc::clone(&self.joined),
            Rule::All => {
                let lacking: Vec<&str> = self
                    .names
                    .iter()
                    .map(|n| &**n)
                    .filter(|n| !has(n))
                    .collect();
                lacking.join(" ").into()
            }
        };
        Err(Unmet {
            scope: Some(scope),
            ..Unmet::new(missing)
        })
    }
}

// === impl Organization ===

impl Organization {
    fn compile(
        problems: &mut Problems,
        path: &str,
        config: &OrganizationConfig,
        namespaces: &Namespaces,
    ) -> Option<Organization> {
        let given = [
            config.equals.is_some(),
            config.one_of.is_some(),
            config.from_header.is_some(),
            config.from_path_segment.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            problems.add(
                path,
                "give exactly one of equals, one_of, from_header, from_path_segment",
            );
            return None;
        }
        let source = if let Some(org) = &config.equals {
            if org.is_empty() {
                problems.add(format!("{path}.equals"), "must not be empty");
            }
            OrgSource::OneOf(Box::new([org.as_str().into()]))
        } else if let Some(orgs) = &config.one_of {
            if orgs.is_empty() {
                problems.add(format!("{path}.one_of"), "must not be empty");
            }
            if orgs.iter().any(String::is_empty) {
                problems.add(format!("{path}.one_of"), "must not contain an empty name");
            }
            OrgSource::OneOf(orgs.iter().map(|o| o.as_str().into()).collect())
        } else if let Some(header) = &config.from_header {
            if !is_header_name(header) {
                problems.add(
                    format!("{path}.from_header"),
                    "must be a lower-case header name",
                );
            }
            OrgSource::Header(header.as_str().into())
        } else {
            OrgSource::PathSegment(config.from_path_segment?)
        };
        Some(Organization {
            claim: ClaimPath::plain_then_namespaced("org_id", namespaces),
            source,
        })
    }

    fn holds(&self, identity: &Identity, request: &RequestView<'_>) -> bool {
        let Some(org) = self.claim.lookup(&identity.claims).and_then(Json::as_str) else {
            return false;
        };
        if org.is_empty() {
            return false;
        }
        match &self.source {
            OrgSource::OneOf(orgs) => orgs.iter().any(|o| **o == *org),
            OrgSource::Header(name) => request.headers.get(name) == Some(org),
            OrgSource::PathSegment(index) => path_segment(request.path, *index) == Some(org),
        }
    }
}

/// Segment `index` (from 0, after the leading `/`) of a path that cannot resolve elsewhere: no `.`/`..`
/// segments, no `\`, no percent-encoded `/`, `\` or `.` (which the upstream might decode into them).
fn path_segment(path: &str, index: usize) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let encoded = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f' | b'e') | (b'5', b'c')
            )
    });
    if encoded || path.contains('\\') || rest.split('/').any(|s| s == "." || s == "..") {
        return None;
    }
    rest.split('/').nth(index).filter(|s| !s.is_empty())
}

// === impl StepUp ===

impl StepUp {
    fn compile(problems: &mut Problems, path: &str, config: &StepUpConfig) -> Option<StepUp> {
        if config.acr.is_none() && config.amr.is_none() && config.max_age.is_none() {
            problems.add(path, "give at least one of acr, amr, max_age");
            return None;
        }
        let acr = config
            .acr
            .as_ref()
            .map(|l| names(problems, &format!("{path}.acr"), l));
        let amr = config
            .amr
            .as_ref()
            .map(|l| names(problems, &format!("{path}.amr"), l))
            .unwrap_or_default();
        if config.max_age == Some(0) {
            problems.add(format!("{path}.max_age"), "must be at least 1 second");
        }
        let max_age = match config.max_age.map(i64::try_from) {
            Some(Err(_)) => {
                problems.add(format!("{path}.max_age"), "is too large");
                None
            }
            Some(Ok(age)) => Some(age),
            None => None,
        };
        Some(StepUp {
            acr_values: acr.as_ref().map(|a| a.join(" ").into()),
            max_age_text: max_age.map(|a| a.to_string().into()),
            acr,
            amr,
            max_age,
        })
    }

    /// RFC 9470 §3: on failure the challenge carries every configured `acr_values` and `max_age`, so one
    /// new authentication satisfies the whole requirement.
    fn check(&self, identity: &Identity, now: i64) -> Result<(), Unmet> {
        self.unmet(identity, now).map_or(Ok(()), |reason| {
            Err(Unmet {
                acr_values: self.acr_values.clone(),
                max_age: self.max_age_text.clone(),
                ..Unmet::new(reason)
            })
        })
    }

    fn unmet(&self, identity: &Identity, now: i64) -> Option<UnmetReason> {
        let claims = &identity.claims;
        if let Some(acr) = &self.acr {
            let token_acr = claims.get("acr").and_then(Json::as_str);
            if !acr.iter().any(|a| Some(&**a) == token_acr) {
                return Some(UnmetReason::AcrNotMet);
            }
        }
        let amr = claims.get("amr").and_then(Json::as_array);
        let has_amr = |m: &str| amr.is_some_and(|list| list.iter().any(|v| v.as_str() == Some(m)));
        if !self.amr.iter().all(|m| has_amr(m)) {
            return Some(UnmetReason::AmrNotMet);
        }
        if let Some(max_age) = self.max_age {
            let auth_time = claims
                .get("auth_time")
                .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
            let fresh = auth_time.is_some_and(|t| {
                now.saturating_sub(t) <= max_age
                    && t <= now.saturating_add(AUTH_TIME_LEEWAY_SECONDS)
            });
            if !fresh {
                return Some(UnmetReason::AuthTooOld);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::testing::{identity, machine};
    use crate::request::Headers;

    const NOW: i64 = 1_700_000_000;

    /// `Ok`, or the denial's label, status and challenge parameters.
    type Answer = Result<(), Denied>;
    type Denied = (String, u16, Vec<(String, String)>);

    fn requirements(yaml: &str) -> Requirements {
        let config: RequireConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let ns_config = serde_yaml_ng::from_str(
            "{claims_namespace: 'https://example.com/', claims_namespace_aliases: ['https://old.example.com/']}",
        )
        .unwrap();
        let mut problems = Problems::default();
        let ns = Namespaces::compile(&mut problems, &ns_config);
        let r = Requirements::compile(&mut problems, "require", &config, &ns);
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        r
    }

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let config: RequireConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        Requirements::compile(
            &mut problems,
            "routes[0].require",
            &config,
            &Namespaces::default(),
        );
        problems
            .0
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    fn run(r: &Requirements, id: &Identity, path: &str, headers: &[(&str, &str)]) -> Answer {
        let view = RequestView::new("GET", path, "h", Headers::Pairs(headers), "");
        r.check(id, &view, "api", NOW).map_err(|u| {
            let params = u
                .challenge_params()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            (u.as_str().to_owned(), u.status(), params)
        })
    }

    fn check(r: &Requirements, id: &Identity) -> Answer {
        run(r, id, "/", &[])
    }

    fn denied(label: &str, status: u16, params: &[(&str, &str)]) -> Answer {
        Err((
            label.to_owned(),
            status,
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    /// A delegated token: `actors` current first, living `lifetime` seconds.
    fn delegated(actors: &[&str], lifetime: i64, permissions: &[&str]) -> Identity {
        let mut act = json!(null);
        for actor in actors.iter().rev() {
            act = if act.is_null() {
                json!({"sub": actor})
            } else {
                json!({"sub": actor, "act": act})
            };
        }
        let mut id = identity(
            "",
            json!({"act": act, "iat": NOW, "permissions": permissions}),
        );
        id.actors = actors.iter().map(|a| a.to_string()).collect();
        id.expires_at = NOW + lifetime;
        id
    }

    #[test]
    fn delegated_tokens_are_refused_unless_allowed() {
        let agent = delegated(&["agent-broker@clients"], 300, &[]);
        let nothing = requirements("{}");
        assert_eq!(
            check(&nothing, &agent),
            denied("delegation_not_allowed", 403, &[])
        );
        assert_eq!(check(&nothing, &identity("", json!({}))), Ok(()));
        let allowed = requirements("delegation: {allow: true}");
        assert_eq!(check(&allowed, &agent), Ok(()));
    }

    #[test]
    fn each_delegation_rule_allows_and_refuses() {
        let r = requirements(
            "delegation: {allow: true, max_depth: 1, actors: [agent-broker@clients], max_lifetime_seconds: 300, forbid_permissions: [machine]}",
        );
        let ok = delegated(&["agent-broker@clients"], 300, &["read:data"]);
        assert_eq!(check(&r, &ok), Ok(()));
        let deep = delegated(&["agent-broker@clients", "agent-broker@clients"], 300, &[]);
        assert_eq!(check(&r, &deep), denied("delegation_too_deep", 403, &[]));
        let stranger = delegated(&["rogue@clients"], 300, &[]);
        assert_eq!(check(&r, &stranger), denied("actor_not_allowed", 403, &[]));
        let long = delegated(&["agent-broker@clients"], 301, &[]);
        assert_eq!(check(&r, &long), denied("delegation_too_long", 403, &[]));
        let mut no_iat = ok.clone();
        no_iat.claims.remove("iat");
        assert_eq!(check(&r, &no_iat), denied("delegation_too_long", 403, &[]));
        let machine_user = delegated(&["agent-broker@clients"], 300, &["machine"]);
        assert_eq!(
            check(&r, &machine_user),
            denied("delegated_permission_forbidden", 403, &[])
        );
        // The rules are about delegation: a token of its own may hold `machine` and live a day.
        let mut own = identity("", json!({"permissions": ["machine"], "iat": NOW}));
        own.expires_at = NOW + 86_400;
        assert_eq!(check(&r, &own), Ok(()));

        let steps = r.explain(
            &stranger,
            &RequestView::new("GET", "/", "h", Headers::Pairs(&[]), ""),
            "api",
            NOW,
        );
        let steps: Vec<(String, bool)> = steps.into_iter().map(|s| (s.check, s.passed)).collect();
        assert_eq!(
            steps,
            [
                ("delegation max_depth 1".to_owned(), true),
                (
                    "delegation actors one of [agent-broker@clients]".to_owned(),
                    false
                ),
                ("delegation max_lifetime 300s".to_owned(), true),
                ("delegation forbid_permissions [machine]".to_owned(), true),
            ]
        );
        assert_eq!(
            problems("delegation: {max_depth: 0}"),
            [
                (
                    "routes[0].require.delegation.allow".to_owned(),
                    "the delegation rules apply to delegated tokens, which need `allow: true`"
                        .to_owned()
                ),
                (
                    "routes[0].require.delegation.max_depth".to_owned(),
                    "must be at least 1 (omit `allow` to refuse delegated tokens)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn audience_must_be_exact_and_is_a_401() {
        let r = requirements("audience: https://api.example.com/mcp/data");
        let with = |aud: Json| identity("", json!({ "aud": aud }));
        assert_eq!(
            check(
                &r,
                &with(json!([
                    "https://api.example.com/",
                    "https://api.example.com/mcp/data"
                ]))
            ),
            Ok(())
        );
        assert_eq!(
            check(&r, &with(json!("https://api.example.com/mcp/data"))),
            Ok(())
        );
        for other in [
            json!("https://api.example.com/mcp/data/"),
            json!(["https://api.example.com/"]),
            json!(null),
        ] {
            assert_eq!(
                check(&r, &with(other)),
                denied("audience_mismatch", 401, &[])
            );
        }
    }

    #[test]
    fn dpop_routes_take_only_bound_tokens() {
        let r = requirements("dpop: true");
        let mut bound = identity("", json!({"cnf": {"jkt": "x"}}));
        assert_eq!(check(&r, &bound), denied("dpop_required", 401, &[]));
        bound.dpop_bound = true;
        assert_eq!(check(&r, &bound), Ok(()));
    }

    #[test]
    fn any_of_takes_one_alternative() {
        let r = requirements(
            "{permissions: {none_of: [banned]}, any_of: [{principal: human}, {permissions: {all_of: [machine]}}]}",
        );
        let mut machine = identity("", json!({"permissions": ["machine"]}));
        machine.kind = PrincipalKind::Machine;
        assert_eq!(check(&r, &machine), Ok(()));
        assert_eq!(check(&r, &identity("", json!({"permissions": []}))), Ok(()));
        let mut agent = identity("", json!({"permissions": []}));
        agent.kind = PrincipalKind::Machine;
        assert_eq!(
            check(&r, &agent).map_err(|(label, status, _)| (label, status)),
            Err(("machine_not_allowed".to_owned(), 403))
        );
        let banned = identity("", json!({"permissions": ["banned"]}));
        assert!(check(&r, &banned).is_err());
        assert_eq!(
            problems("{any_of: [{}, {principal: human}]}"),
            vec![(
                "routes[0].require.any_of[0]".to_owned(),
                "must give at least one requirement".to_owned()
            )]
        );
    }

    #[test]
    fn scopes_all_of_names_only_the_missing() {
        let r = requirements("scopes: {all_of: [read:x, write:x, admin:x]}");
        assert_eq!(
            check(&r, &identity("read:x write:x admin:x", json!({}))),
            Ok(())
        );
        assert_eq!(
            check(&r, &identity("write:x", json!({}))),
            denied("missing_scope", 403, &[("scope", "read:x admin:x")])
        );
    }

    #[test]
    fn scopes_any_of_names_every_option() {
        let r = requirements("scopes: {any_of: [read:x, admin:x]}");
        assert_eq!(check(&r, &identity("admin:x", json!({}))), Ok(()));
        assert_eq!(
            check(&r, &identity("read:xy", json!({}))),
            denied("missing_scope", 403, &[("scope", "read:x admin:x")])
        );
    }

    #[test]
    fn scopes_none_of() {
        let r = requirements("scopes: {none_of: [impersonate]}");
        assert_eq!(check(&r, &identity("read:x", json!({}))), Ok(()));
        assert_eq!(
            check(&r, &identity("read:x impersonate", json!({}))),
            denied("forbidden_scope", 403, &[])
        );
    }

    #[test]
    fn permissions_all_of_and_any_of() {
        let r = requirements("permissions: {all_of: [read:portfolio, write:strategy]}");
        let both = identity(
            "",
            json!({"permissions": ["read:portfolio", "write:strategy"]}),
        );
        assert_eq!(check(&r, &both), Ok(()));
        let one = identity("", json!({"permissions": ["read:portfolio"]}));
        assert_eq!(
            check(&r, &one),
            denied("missing_permission", 403, &[("scope", "write:strategy")])
        );
        // A scope of the same name is not a permission.
        let scoped = identity("read:portfolio write:strategy", json!({}));
        assert_eq!(
            check(&r, &scoped),
            denied(
                "missing_permission",
                403,
                &[("scope", "read:portfolio write:strategy")]
            )
        );

        let r = requirements("permissions: {any_of: [deploy:strategy, admin:cluster]}");
        assert_eq!(
            check(
                &r,
                &identity("", json!({"permissions": "admin:cluster other"}))
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &r,
                &identity("", json!({"permissions": ["read:portfolio"]}))
            ),
            denied(
                "missing_permission",
                403,
                &[("scope", "deploy:strategy admin:cluster")]
            )
        );
    }

    #[test]
    fn permissions_none_of() {
        let r = requirements("permissions: {none_of: [data-labeler]}");
        assert_eq!(check(&r, &identity("", json!({}))), Ok(()));
        assert_eq!(
            check(&r, &identity("", json!({"permissions": ["data-labeler"]}))),
            denied("forbidden_permission", 403, &[])
        );
    }

    #[test]
    fn claims_must_all_hold() {
        let r = requirements(
            "claims: [{claim: email_verified, equals: true}, {claim: roles, namespaced: true, contains: admin}]",
        );
        let ok = identity(
            "",
            json!({"email_verified": true, "https://old.example.com/roles": ["admin"]}),
        );
        assert_eq!(check(&r, &ok), Ok(()));
        let unverified = identity(
            "",
            json!({"email_verified": false, "https://example.com/roles": ["admin"]}),
        );
        assert_eq!(check(&r, &unverified), denied("claim_mismatch", 403, &[]));
    }

    #[test]
    fn organization_fixed_and_list() {
        let r = requirements("organization: {equals: org_1}");
        assert_eq!(check(&r, &identity("", json!({"org_id": "org_1"}))), Ok(()));
        assert_eq!(
            check(
                &r,
                &identity("", json!({"https://example.com/org_id": "org_1"}))
            ),
            Ok(())
        );
        assert_eq!(
            check(&r, &identity("", json!({"org_id": "org_2"}))),
            denied("wrong_organization", 403, &[])
        );
        assert_eq!(
            check(&r, &identity("", json!({}))),
            denied("wrong_organization", 403, &[])
        );

        let r = requirements("organization: {one_of: [org_1, org_2]}");
        assert_eq!(check(&r, &identity("", json!({"org_id": "org_2"}))), Ok(()));
        assert_eq!(
            check(&r, &identity("", json!({"org_id": "org_3"}))),
            denied("wrong_organization", 403, &[])
        );
    }

    #[test]
    fn organization_from_header() {
        let r = requirements("organization: {from_header: x-tenant}");
        let id = identity("", json!({"org_id": "org_1"}));
        assert_eq!(run(&r, &id, "/", &[("x-tenant", "org_1")]), Ok(()));
        assert!(run(&r, &id, "/", &[("x-tenant", "org_2")]).is_err());
        assert!(run(&r, &id, "/", &[]).is_err());
        let empty = identity("", json!({"org_id": ""}));
        assert!(run(&r, &empty, "/", &[("x-tenant", "")]).is_err());
    }

    #[test]
    fn a_tenant_cannot_reach_another_tenants_path() {
        let r = requirements("organization: {from_path_segment: 1}");
        let id = identity("", json!({"org_id": "org_1"}));
        assert_eq!(run(&r, &id, "/tenants/org_1/admin", &[]), Ok(()));
        assert_eq!(run(&r, &id, "/tenants/org_1", &[]), Ok(()));
        for path in [
            "/tenants/org_2/admin",
            "/tenants/org_1/../org_2/admin",
            "/tenants/org_1/%2e%2e/org_2/admin",
            "/tenants/org_1%2F..%2Forg_2/admin",
            "/tenants/org_1\\..\\org_2",
            "/tenants//org_1",
            "/tenants",
            "/tenants/org_1x/admin",
        ] {
            assert_eq!(
                run(&r, &id, path, &[]),
                denied("wrong_organization", 403, &[]),
                "{path}"
            );
        }
    }

    #[test]
    fn principal_human_or_machine() {
        let human_only = requirements("principal: human");
        let machine_only = requirements("principal: machine");
        let person = identity("", json!({}));
        let robot = machine("svc", "", json!({}));
        assert_eq!(check(&human_only, &person), Ok(()));
        assert_eq!(
            check(&human_only, &robot),
            denied("machine_not_allowed", 403, &[])
        );
        assert_eq!(check(&machine_only, &robot), Ok(()));
        assert_eq!(
            check(&machine_only, &person),
            denied("human_not_allowed", 403, &[])
        );
        assert!(requirements("principal: any").is_empty());
    }

    #[test]
    fn step_up_acr() {
        let r = requirements("step_up: {acr: ['urn:mfa', 'urn:phr']}");
        assert_eq!(check(&r, &identity("", json!({"acr": "urn:phr"}))), Ok(()));
        let want = [("acr_values", "urn:mfa urn:phr")];
        assert_eq!(
            check(&r, &identity("", json!({"acr": "urn:pwd"}))),
            denied("acr_not_met", 401, &want)
        );
        assert_eq!(
            check(&r, &identity("", json!({}))),
            denied("acr_not_met", 401, &want)
        );
    }

    #[test]
    fn step_up_amr_needs_every_method() {
        let r = requirements("step_up: {amr: [mfa, hwk]}");
        assert_eq!(
            check(&r, &identity("", json!({"amr": ["pwd", "mfa", "hwk"]}))),
            Ok(())
        );
        assert_eq!(
            check(&r, &identity("", json!({"amr": ["mfa"]}))),
            denied("amr_not_met", 401, &[])
        );
        assert_eq!(
            check(&r, &identity("", json!({"amr": "mfa hwk"}))),
            denied("amr_not_met", 401, &[])
        );
    }

    #[test]
    fn step_up_max_age_uses_the_given_now() {
        let r = requirements("step_up: {amr: [mfa], max_age: 180}");
        let at = |t: i64| identity("", json!({"amr": ["mfa"], "auth_time": t}));
        assert_eq!(check(&r, &at(NOW - 180)), Ok(()));
        assert_eq!(check(&r, &at(NOW - 10)), Ok(()));
        assert_eq!(
            check(&r, &at(NOW - 181)),
            denied("auth_too_old", 401, &[("max_age", "180")])
        );
        assert_eq!(
            check(&r, &at(NOW + 61)),
            denied("auth_too_old", 401, &[("max_age", "180")])
        );
        let none = identity("", json!({"amr": ["mfa"]}));
        assert_eq!(
            check(&r, &none),
            denied("auth_too_old", 401, &[("max_age", "180")])
        );
        let text = identity("", json!({"amr": ["mfa"], "auth_time": "1700000000"}));
        assert_eq!(
            check(&r, &text),
            denied("auth_too_old", 401, &[("max_age", "180")])
        );
    }

    #[test]
    fn forbidden_comes_before_step_up() {
        let r = requirements(
            "{permissions: {all_of: [kill_switch:execute]}, step_up: {amr: [mfa], max_age: 180}}",
        );
        let no_mfa = identity("", json!({"permissions": ["kill_switch:execute"]}));
        assert_eq!(
            check(&r, &no_mfa),
            denied("amr_not_met", 401, &[("max_age", "180")])
        );
        let no_permission = identity("", json!({"permissions": []}));
        assert_eq!(
            check(&r, &no_permission),
            denied(
                "missing_permission",
                403,
                &[("scope", "kill_switch:execute")]
            )
        );
    }

    #[test]
    fn explain_lists_every_requirement() {
        let r = requirements("{principal: human, scopes: {all_of: [a]}, step_up: {max_age: 60}}");
        let id = identity("a", json!({}));
        let view = RequestView::new("GET", "/", "h", Headers::Pairs(&[]), "");
        let steps = r.explain(&id, &view, "api", NOW);
        let got: Vec<(&str, bool, Option<&str>)> = steps
            .iter()
            .map(|s| (s.check.as_str(), s.passed, s.unmet))
            .collect();
        assert_eq!(
            got,
            [
                ("principal human", true, None),
                ("scopes all_of [a]", true, None),
                ("step_up auth_time within 60s", false, Some("auth_too_old")),
            ]
        );
    }

    #[test]
    fn any_of_machine_with_write_or_human_with_mfa() {
        let r = requirements(
            "any_of: [{principal: machine, scopes: {all_of: ['write:data']}}, \
                      {principal: human, step_up: {amr: [mfa]}}]",
        );
        assert_eq!(check(&r, &machine("svc", "write:data", json!({}))), Ok(()));
        assert_eq!(
            check(&r, &identity("", json!({"amr": ["pwd", "mfa"]}))),
            Ok(())
        );
        // Neither group holds: the first group's answer.
        assert_eq!(
            check(&r, &machine("svc", "read:data", json!({}))),
            denied("missing_scope", 403, &[("scope", "write:data")])
        );
        assert_eq!(
            check(&r, &identity("write:data", json!({"amr": ["pwd"]}))),
            denied("human_not_allowed", 403, &[])
        );
    }

    #[test]
    fn not_excludes_a_group() {
        let r = requirements(
            "{scopes: {all_of: [read]}, not: {claims: [{claim: email, prefix: 'test-'}]}}",
        );
        assert_eq!(
            check(&r, &identity("read", json!({"email": "ada@example.com"}))),
            Ok(())
        );
        assert_eq!(
            check(
                &r,
                &identity("read", json!({"email": "test-1@example.com"}))
            ),
            denied("excluded_by_not", 403, &[])
        );
        // NOT over a group is NOT of the AND: only both together are excluded.
        let r = requirements("not: {principal: machine, scopes: {all_of: [admin]}}");
        assert_eq!(check(&r, &machine("svc", "read", json!({}))), Ok(()));
        assert_eq!(check(&r, &identity("admin", json!({}))), Ok(()));
        assert_eq!(
            check(&r, &machine("svc", "admin", json!({}))),
            denied("excluded_by_not", 403, &[])
        );
    }

    #[test]
    fn expressions_deny_on_false_and_on_error() {
        let r = requirements(
            "expression: \"claims.email.endsWith('@example.com') && request.method == 'GET'\"",
        );
        assert_eq!(
            check(&r, &identity("", json!({"email": "ada@example.com"}))),
            Ok(())
        );
        assert_eq!(
            check(&r, &identity("", json!({"email": "eve@evil.com"}))),
            denied("expression_false", 403, &[])
        );
        assert_eq!(
            check(&r, &identity("", json!({}))),
            denied("expression_error", 403, &[])
        );
        // Under `not`, an expression that fails to evaluate does not hold, so `not` alone would let it
        // through; combined with the positive expression the request is still denied.
        let r =
            requirements("{expression: 'claims.level >= 2', not: {expression: 'claims.banned'}}");
        assert_eq!(
            check(&r, &identity("", json!({"level": 2, "banned": false}))),
            Ok(())
        );
        assert_eq!(
            check(&r, &identity("", json!({"level": 2, "banned": true}))),
            denied("excluded_by_not", 403, &[])
        );
        assert_eq!(
            check(&r, &identity("", json!({"level": "2"}))),
            denied("expression_error", 403, &[])
        );
    }

    #[test]
    fn explain_shows_expressions_with_inputs_and_groups() {
        let r = requirements(
            "{expression: \"claims.email.endsWith('@example.com')\", any_of: [{principal: machine}, {scopes: {all_of: [a]}}]}",
        );
        let id = identity("a", json!({"email": "ada@example.com"}));
        let view = RequestView::new("GET", "/", "h", Headers::Pairs(&[]), "");
        let steps = r.explain(&id, &view, "api", NOW);
        let got: Vec<(&str, bool)> = steps.iter().map(|s| (s.check.as_str(), s.passed)).collect();
        assert_eq!(
            got,
            [
                ("expression claims.email.endsWith('@example.com')", true),
                ("any_of 2 groups", true),
                ("any_of[0]: principal machine", false),
                ("any_of[1]: scopes all_of [a]", true),
            ]
        );
        assert_eq!(steps[0].value.as_deref(), Some("true"));
        assert_eq!(
            steps[0].inputs.as_ref().unwrap()["claims.email"],
            json!("ada@example.com")
        );
        let json = serde_json::to_value(&steps[0]).unwrap();
        assert_eq!(json["inputs"]["claims.email"], "ada@example.com");
        assert!(serde_json::to_value(&steps[1])
            .unwrap()
            .get("inputs")
            .is_none());
    }

    #[test]
    fn bad_combinators_and_expressions_are_reported_with_paths() {
        let found = problems(
            "{expression: 'claims.a ==', any_of: [{}, {expression: 'nobody.x'}], not: {scopes: {}}}",
        );
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].require.expression",
                "routes[0].require.any_of[0]",
                "routes[0].require.any_of[1].expression",
                "routes[0].require.not.scopes",
            ]
        );
        assert_eq!(found[1].1, "must give at least one requirement");
        assert!(
            found[2].1.contains("unknown variable `nobody`"),
            "{}",
            found[2].1
        );
        assert_eq!(
            problems("any_of: []")[0],
            (
                "routes[0].require.any_of".to_owned(),
                "must not be empty".to_owned()
            )
        );
    }

    #[test]
    fn bad_requirements_are_reported_with_paths() {
        let found = problems(
            r#"{scopes: {}, permissions: {all_of: [], any_of: ["a b", 'x"y']}, claims: [],
                organization: {equals: org_1, from_header: x-tenant},
                step_up: {acr: [], max_age: 0}}"#,
        );
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].require.scopes",
                "routes[0].require.permissions.all_of",
                "routes[0].require.permissions.any_of[0]",
                "routes[0].require.permissions.any_of[1]",
                "routes[0].require.claims",
                "routes[0].require.organization",
                "routes[0].require.step_up.acr",
                "routes[0].require.step_up.max_age",
            ]
        );
        assert_eq!(found[7].1, "must be at least 1 second");
        assert_eq!(
            problems("step_up: {}")[0].1,
            "give at least one of acr, amr, max_age"
        );
        assert_eq!(
            problems("organization: {from_header: X-Tenant}")[0].0,
            "routes[0].require.organization.from_header"
        );
    }
}
