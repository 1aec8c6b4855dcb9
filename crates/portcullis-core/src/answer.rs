//! What the client and the upstream are told: a [`Verdict`] becomes an [`Answer`] of plain Rust values
//! (status, headers to set and to remove, the challenge, the body, the metadata). Every rule about answers
//! lives here: which client headers are stripped, how a challenge is composed (RFC 6750 §3, RFC 9470 §3),
//! a route's own deny status, headers and body. `portcullis-proto/src/translate.rs` only writes the answer as Envoy's
//! protobuf.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use crate::authorizer::{Explanation, Verdict};
use crate::config::{BodyStyle, Config, CredentialLocation, BUILTIN_HEADER_SUFFIXES};
use crate::decision::{Decision, Denial, DenyCause, Unavailable, UnmetReason};
use crate::identity::Identity;
use crate::identity_token::{IdentityTokens, Subject};
use crate::policy::{DenyVars, RouteToken};
use crate::request::{is_header_name, RequestView};

/// Everything about answers that is fixed at start: header names and what to strip.
#[derive(Debug, Clone)]
pub struct AnswerSettings {
    prefix: Box<str>,
    subject: Box<str>,
    client_id: Box<str>,
    issuer: Box<str>,
    scopes: Box<str>,
    provider: Box<str>,
    actor: Box<str>,
    delegation_chain: Box<str>,
    decision_id: Box<str>,
    would_deny: Box<str>,
    remove_authorization: bool,
    /// Where each provider reads its credential, by provider name (for `remove_authorization`).
    places: std::collections::HashMap<Box<str>, CredentialLocation>,
    body: BodyStyle,
    /// `answers.claims_in_metadata`: the default of routes that do not set their own.
    claims_in_metadata: bool,
    /// The signed identity token for the upstream (`identity_token`).
    identity_tokens: Option<Arc<IdentityTokens>>,
    /// Tells these settings from any other (header names change with a reload): an encoding of an
    /// identity's headers made under other settings is not reused.
    id: u64,
}

// === impl AnswerSettings ===

impl AnswerSettings {
    pub fn new(config: &Config, identity_tokens: Option<Arc<IdentityTokens>>) -> AnswerSettings {
        let prefix = config.headers.prefix.as_str();
        AnswerSettings {
            prefix: prefix.into(),
            subject: format!("{prefix}subject").into(),
            client_id: format!("{prefix}client-id").into(),
            issuer: format!("{prefix}issuer").into(),
            scopes: format!("{prefix}scopes").into(),
            provider: format!("{prefix}provider").into(),
            actor: format!("{prefix}actor").into(),
            delegation_chain: format!("{prefix}delegation-chain").into(),
            decision_id: format!("{prefix}decision-id").into(),
            would_deny: format!("{prefix}would-deny").into(),
            id: {
                static SETTINGS: std::sync::atomic::AtomicU64 =
                    std::sync::atomic::AtomicU64::new(1);
                SETTINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            remove_authorization: config.headers.remove_authorization,
            places: config
                .providers
                .iter()
                .filter(|p| p.kind.takes_credential())
                .map(|p| (p.name.as_str().into(), p.credential.clone()))
                .collect(),
            body: config.answers.body,
            claims_in_metadata: config.answers.claims_in_metadata,
            identity_tokens,
        }
    }

    pub fn identity_tokens(&self) -> Option<&IdentityTokens> {
        self.identity_tokens.as_deref()
    }

    /// The signer itself, for a reloaded runtime to keep.
    pub fn identity_tokens_arc(&self) -> Option<Arc<IdentityTokens>> {
        self.identity_tokens.clone()
    }
}

/// What kind of answer this is; with [`Answer::status`], all a transport needs to pick its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request goes upstream (an allow, or a permissive-mode permit).
    Allow,
    /// Denied; `standard_status` is the denial's own 400/401/403, before a route's `deny.status`.
    Deny { standard_status: u16 },
    /// Could not decide: never an allow.
    Unavailable,
}

/// A header to set, overwriting any the request already has.
pub type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The answer to one check, as plain values.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub outcome: Outcome,
    /// The HTTP status: 200 for an allow.
    pub status: u16,
    /// Headers to set: on the upstream request for an allow, on the client's response otherwise.
    pub headers: Vec<Header<'a>>,
    /// On an allow with an identity: the first `count` of `headers` come from the identity and the
    /// settings `settings` alone (the same for every request it answers), so a transport may write an
    /// encoding it made once for them.
    pub identity_headers: Option<IdentityHeaders>,
    /// Client headers to remove before the request goes upstream (allows only).
    pub remove: Vec<String>,
    /// Query parameters to remove before the request goes upstream (allows only).
    pub remove_query: Vec<String>,
    /// The response body (empty for an allow).
    pub body: String,
    /// The stable label of the denial or unavailability (empty for an allow).
    pub reason: &'static str,
    /// What other filters and access logs learn of an allow.
    pub metadata: Option<Metadata<'a>>,
    pub explanation: Option<&'a Explanation>,
}

/// Which leading headers of an allow are the identity's own (see [`Answer::identity_headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// The [`AnswerSettings`] they were named under.
    pub settings: u64,
    pub count: usize,
}

/// The dynamic metadata of an allow.
#[derive(Debug, Clone, Copy)]
pub struct Metadata<'a> {
    pub identity: Option<&'a Identity>,
    pub decision_id: &'a str,
    pub route: &'a str,
    pub would_deny: Option<&'static str>,
    /// Whether the identity's claims go in too (`claims_in_metadata` of the route, else of `answers`).
    pub claims: bool,
}

/// Builds the answer to a verdict.
pub fn answer<'a>(
    verdict: &'a Verdict<'_>,
    request: &RequestView<'_>,
    settings: &'a AnswerSettings,
) -> Answer<'a> {
    let mut answer = match &verdict.decision {
        Decision::Allow(identity) => allow(Some(identity), None, verdict, request, settings),
        Decision::Permit {
            identity,
            would_deny,
        } => allow(
            identity.as_ref(),
            Some(would_deny),
            verdict,
            request,
            settings,
        ),
        Decision::Deny(denial) => deny(denial, verdict, request, settings.body),
        Decision::Error(why) => unavailable(*why, verdict, settings.body),
    };
    answer.explanation = verdict.explanation.as_ref();
    answer
}

/// Whether two header names are the same once `_` is read as `-` and case is folded, as CGI/WSGI-style
/// servers read them (`x_auth_subject` and `X-Auth-Subject` are both `HTTP_X_AUTH_SUBJECT`).
fn same_as_cgi_reads_it(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(&a, &b)| {
            let a = if a == b'_' { b'-' } else { a };
            let b = if b == b'_' { b'-' } else { b };
            a.eq_ignore_ascii_case(&b)
        })
}

/// An allow, or a permissive-mode permit (`would_deny`), with the identity when there is one.
fn allow<'a>(
    identity: Option<&'a Arc<Identity>>,
    would_deny: Option<&'a Denial>,
    verdict: &'a Verdict<'_>,
    request: &RequestView<'_>,
    s: &'a AnswerSettings,
) -> Answer<'a> {
    let mut headers: Vec<Header<'a>> = Vec::with_capacity(8);
    let identity_headers = identity.map(|identity| {
        identity_headers(identity, s, &mut headers);
        IdentityHeaders {
            settings: s.id,
            count: headers.len(),
        }
    });
    // The signed identity: on real allows only (a permissive-mode permit is not vouched for), set with
    // overwrite; when it is not set, a client's copy is removed below.
    let mut token_header = None;
    if let Some(tokens) = &s.identity_tokens {
        let route = verdict.route;
        let audience = match route.identity_token() {
            RouteToken::Off => None,
            RouteToken::Default => Some(None),
            RouteToken::Audience(a) => Some(Some(a)),
        };
        token_header = Some(tokens.header());
        if let (Some(audience), Some(identity), None) = (audience, identity, would_deny) {
            let subject = Subject {
                identity,
                route: route.name(),
                route_index: route.index(),
                audience,
                decision_id: &verdict.decision_id,
            };
            if let Some(token) = tokens.token(&subject) {
                headers.push((
                    Cow::Borrowed(tokens.header()),
                    Cow::Owned(token.to_string()),
                ));
            }
        }
    }
    headers.push((
        Cow::Borrowed(&s.decision_id),
        Cow::Borrowed(&verdict.decision_id),
    ));
    if let Some(denial) = would_deny {
        headers.push((Cow::Borrowed(&s.would_deny), Cow::Borrowed(denial.label())));
    }

    // Every client header under the prefix goes, except those we overwrite: removing one we also set
    // would remove ours too, whichever order Envoy applies the two lists in.
    // `_` counts as `-`: CGI/WSGI-style servers read `x_auth_subject` as `HTTP_X_AUTH_SUBJECT`, ours.
    // `seen` keeps this linear in the number of headers: a Check may carry thousands.
    let mut remove: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for name in request.headers.names() {
        let is_ours = name.len() >= s.prefix.len()
            && same_as_cgi_reads_it(&name.as_bytes()[..s.prefix.len()], s.prefix.as_bytes());
        if !is_ours {
            continue;
        }
        let set_by_us = headers
            .iter()
            .any(|(key, _)| key.eq_ignore_ascii_case(name));
        if set_by_us {
            continue;
        }
        let name = name.to_ascii_lowercase();
        if seen.insert(name.clone()) {
            remove.push(name);
        }
    }
    let mut remove_query = Vec::new();
    if s.remove_authorization {
        if request.headers.get("authorization").is_some()
            && !remove.iter().any(|r| r == "authorization")
        {
            remove.push("authorization".to_owned());
        }
        // The credential that authenticated, wherever it was found.
        let place = identity.and_then(|id| s.places.get(&*id.provider));
        match place {
            Some(CredentialLocation::Header { name, .. })
                if request.headers.get(name).is_some() && !remove.contains(name) =>
            {
                remove.push(name.clone());
            }
            // Every `cookie` line: the rewrite replaces them all with the one line kept.
            Some(CredentialLocation::Cookie(cookie)) if request.headers.count("cookie") > 0 => {
                let kept: Vec<&str> = request
                    .headers
                    .values("cookie")
                    .flat_map(|line| line.split(';'))
                    .map(str::trim)
                    .filter(|pair| {
                        !pair.is_empty()
                            && pair.split_once('=').is_none_or(|(k, _)| k.trim() != cookie)
                    })
                    .collect();
                if kept.is_empty() {
                    remove.push("cookie".to_owned());
                } else {
                    headers.push((Cow::Borrowed("cookie"), Cow::Owned(kept.join("; "))));
                }
            }
            Some(CredentialLocation::Query(param)) => remove_query.push(param.clone()),
            _ => {}
        }
    }
    // The identity token's header, in every spelling a CGI-style server reads as it (`x_identity_token`
    // for `x-identity-token`), except the exact name when we set it (overwritten).
    if let Some(name) = token_header {
        let set_by_us = headers.iter().any(|(key, _)| key == name);
        for sent in request.headers.names() {
            if !same_as_cgi_reads_it(sent.as_bytes(), name.as_bytes())
                || (set_by_us && sent.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let sent = sent.to_ascii_lowercase();
            if !remove.contains(&sent) {
                remove.push(sent);
            }
        }
    }

    Answer {
        outcome: Outcome::Allow,
        status: 200,
        headers,
        identity_headers,
        remove,
        remove_query,
        body: String::new(),
        reason: "",
        metadata: Some(Metadata {
            identity: identity.map(|i| &**i),
            decision_id: &verdict.decision_id,
            route: verdict.route.name(),
            would_deny: would_deny.map(Denial::label),
            claims: verdict
                .route
                .claims_in_metadata()
                .unwrap_or(s.claims_in_metadata),
        }),
        explanation: None,
    }
}

fn identity_headers<'a>(
    identity: &'a Identity,
    s: &'a AnswerSettings,
    headers: &mut Vec<Header<'a>>,
) {
    let mut set = |name: &'a str, value: &'a str| headers.push((name.into(), value.into()));
    if let Some(subject) = &identity.subject {
        set(&s.subject, subject);
    }
    if let Some(client_id) = &identity.client_id {
        set(&s.client_id, client_id);
    }
    if !identity.issuer.is_empty() {
        set(&s.issuer, &identity.issuer);
    }
    if !identity.scopes.is_empty() {
        set(&s.scopes, &identity.scopes);
    }
    set(&s.provider, &identity.provider);
    // RFC 8693 §4.1: the current actor is the outermost `act`; the chain lists every actor, current first.
    if let Some(actor) = identity.actors.first() {
        set(&s.actor, actor);
    }
    for (name, value) in &identity.headers {
        set(name, value);
    }
    if !identity.actors.is_empty() {
        headers.push((
            Cow::Borrowed(&s.delegation_chain),
            Cow::Owned(identity.actors.join(",")),
        ));
    }
    // Attributes (claims_mapping, webhook and API key attributes): `<prefix><name>`, values joined by `,`.
    for (name, values) in &identity.attributes {
        if values.is_empty()
            || !is_header_name(name)
            || BUILTIN_HEADER_SUFFIXES.contains(&name.as_str())
        {
            continue;
        }
        let key = format!("{}{name}", s.prefix);
        if headers.iter().any(|(k, _)| *k == key) {
            continue;
        }
        headers.push((key.into(), values.join(",").into()));
    }
}

/// The JSON body of a denial or an error answer: ours, or llama-stack's `{"error": {"message": …}}` with
/// the provider's message (else the description).
fn json_body(
    style: BodyStyle,
    error: &str,
    description: &str,
    decision_id: &str,
    message: Option<&str>,
) -> String {
    if style == BodyStyle::LlamaStack {
        let message = message.unwrap_or(description);
        return serde_json::json!({ "error": { "message": message } }).to_string();
    }
    let mut body = serde_json::json!({
        "error": error,
        "error_description": description,
        "decision_id": decision_id,
    });
    if let Some(message) = message {
        body["message"] = Value::from(message);
    }
    body.to_string()
}

/// The `WWW-Authenticate` challenge: plain when no credential was sent (RFC 6750 §3), else with `error`,
/// `error_description` and the policy's parameters (`scope`, RFC 6750 §3.1; `acr_values`, `max_age`,
/// RFC 9470 §3).
fn challenge(denial: &Denial, verdict: &Verdict<'_>, request: &RequestView<'_>) -> String {
    let mut out = error_challenge(denial, verdict);
    // RFC 9728 §5.1: where the client finds the resource's metadata, on the host it asked.
    if let Some(path) = verdict.route.resource_metadata() {
        if denial.status() == 401 && crate::identity::header_safe(request.host) {
            let scheme = if request.scheme.is_empty() {
                "https"
            } else {
                request.scheme
            };
            let host = request.host.replace(['"', '\\'], "");
            let _ = write!(out, ", resource_metadata=\"{scheme}://{host}{path}\"");
        }
    }
    out
}

fn error_challenge(denial: &Denial, verdict: &Verdict<'_>) -> String {
    let challenge = verdict.route.challenge();
    if denial.is_plain_challenge() {
        return challenge.plain.to_string();
    }
    // RFC 9449 §7.1: a DPoP token's failure is answered in the DPoP scheme, with the accepted `algs`.
    let dpop_route =
        matches!(&denial.cause, DenyCause::Policy(u) if u.reason() == UnmetReason::DpopRequired);
    let (scheme, algs) = match &denial.dpop {
        Some(dpop) => ("DPoP", Some(&*dpop.algs)),
        None if dpop_route => ("DPoP", None),
        None => (&*challenge.scheme, None),
    };
    let mut out = format!("{scheme} realm=\"{}\"", challenge.realm);
    if let Some(algs) = algs {
        let _ = write!(out, ", algs=\"{algs}\"");
    }
    let _ = write!(
        out,
        ", error=\"{}\", error_description=\"{}\"",
        denial.error_code(),
        denial.description()
    );
    if let DenyCause::Policy(unmet) = &denial.cause {
        for (name, value) in unmet.challenge_params() {
            let _ = write!(out, ", {name}=\"{value}\"");
        }
    }
    out
}

/// A Check for a resource's RFC 9728 metadata path: the document itself, as a 200 the client receives
/// from Envoy (a denied response, so the request never reaches the upstream).
pub fn resource_document(body: &str) -> Answer<'static> {
    Answer {
        outcome: Outcome::Deny {
            standard_status: 200,
        },
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "max-age=300".into()),
        ],
        remove: Vec::new(),
        remove_query: Vec::new(),
        body: body.to_owned(),
        reason: "resource_metadata",
        metadata: None,
        explanation: None,
        identity_headers: None,
    }
}

fn deny<'a>(
    denial: &'a Denial,
    verdict: &'a Verdict<'_>,
    request: &RequestView<'_>,
    style: BodyStyle,
) -> Answer<'a> {
    let custom = verdict.route.deny();
    let status = custom.status().unwrap_or(denial.status());
    let mut headers: Vec<Header<'a>> = vec![
        (
            "www-authenticate".into(),
            challenge(denial, verdict, request).into(),
        ),
        ("content-type".into(), "application/json".into()),
        ("cache-control".into(), "no-store".into()),
    ];
    let body = match custom.body() {
        Some(template) => template.render(&DenyVars {
            error: denial.error_code(),
            error_description: denial.description(),
            decision_id: &verdict.decision_id,
            route: verdict.route.name(),
        }),
        None => json_body(
            style,
            denial.error_code(),
            denial.description(),
            &verdict.decision_id,
            denial.message.as_deref(),
        ),
    };
    if let Some(nonce) = denial.dpop.as_ref().and_then(|d| d.nonce.as_deref()) {
        headers.push(("dpop-nonce".into(), Cow::Borrowed(nonce)));
    }
    for (name, value) in custom.headers() {
        headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        headers.push((Cow::Borrowed(name), Cow::Borrowed(value)));
    }
    Answer {
        outcome: Outcome::Deny {
            standard_status: denial.status(),
        },
        status,
        headers,
        identity_headers: None,
        remove: Vec::new(),
        remove_query: Vec::new(),
        body,
        reason: denial.label(),
        metadata: None,
        explanation: None,
    }
}

/// Cannot decide: a 503 error answer. Never an allow.
fn unavailable<'a>(why: Unavailable, verdict: &Verdict<'_>, style: BodyStyle) -> Answer<'a> {
    Answer {
        outcome: Outcome::Unavailable,
        status: 503,
        headers: vec![("content-type".into(), "application/json".into())],
        identity_headers: None,
        remove: Vec::new(),
        remove_query: Vec::new(),
        body: json_body(
            style,
            "temporarily_unavailable",
            why.description(),
            &verdict.decision_id,
            None,
        ),
        reason: why.as_str(),
        metadata: None,
        explanation: None,
    }
}
