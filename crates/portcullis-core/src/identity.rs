//! Who is behind a credential: the [`Identity`] every provider produces, and the one
//! [`IdentityBuilder`] that makes it from verified claims (a JWT payload, an introspection answer) or from
//! a principal a provider names itself (an API key, a webhook answer, a GitHub user, a certificate).
//!
//! Every value that can reach an upstream header is checked here once: control characters are refused
//! (RFC 9110 §5.5) and list elements containing `,` are dropped, since lists are joined with `,`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Who is behind a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person, e.g. a token from an authorization-code or device flow.
    Human,
    /// A program acting for itself: an OAuth2 client-credentials token, an API key, a workload identity.
    Machine,
    /// Nobody: the identity of an `anonymous` provider, for requests that carry no credential.
    Anonymous,
}

// === impl PrincipalKind ===

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Human => "human",
            PrincipalKind::Machine => "machine",
            PrincipalKind::Anonymous => "anonymous",
        }
    }
}

/// A verified principal.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The provider that authenticated it (`x-auth-provider`).
    pub provider: Arc<str>,
    /// `sub`, when the token has one (`x-auth-subject`).
    pub subject: Option<String>,
    /// Human or machine (`x-auth-principal-kind`).
    pub kind: PrincipalKind,
    /// The OAuth2 client (`client_id`, else `azp`) of a machine principal (`x-auth-client-id`).
    pub client_id: Option<String>,
    /// Named attributes for headers and policy (a provider's `claims_mapping`): each a list of values.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// `iss` (`x-auth-issuer`).
    pub issuer: Arc<str>,
    /// Space-separated scopes from `scope` or `scp` (`x-auth-scopes`).
    pub scopes: String,
    /// Mapped claim headers: name (under the identity prefix) and value.
    pub headers: Vec<(Arc<str>, String)>,
    /// Every claim of the token, for dynamic metadata and policy.
    pub claims: Map<String, Value>,
    /// `exp` as Unix seconds.
    pub expires_at: i64,
    /// The delegation chain (RFC 8693 §4.1 nested `act`): the actors' `sub`, the current actor (the
    /// outermost `act`) first. Empty when the token is not delegated. An actor without a usable `sub` is an
    /// empty string, which no `actors` rule matches (`x-auth-actor`, `x-auth-delegation-chain`).
    pub actors: Vec<String>,
    /// The token is bound to a DPoP key (`cnf.jkt`) by a provider that enforces DPoP (`jwt`,
    /// `introspection`), so this request carried a valid proof for it (`require: {dpop: true}`).
    pub dpop_bound: bool,
    /// What the layers above derive from this identity once and reuse for every request it answers while
    /// it is cached (the answer's encoded metadata). Empty in a clone, so a modified copy never carries a
    /// stale one.
    pub prepared: Prepared,
}

/// A write-once slot for one value derived from an [`Identity`], of a type this layer does not name.
/// Never part of an identity's equality; a clone starts empty.
#[derive(Default)]
pub struct Prepared(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

// === impl Prepared ===

impl Prepared {
    /// The value, made by `make` the first time. `None` when the slot already holds another type (then
    /// the caller makes its value itself, every time).
    pub fn get_or_init<T: std::any::Any + Send + Sync>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Option<&T> {
        self.0.get_or_init(|| Box::new(make())).downcast_ref()
    }
}

impl Clone for Prepared {
    fn clone(&self) -> Prepared {
        Prepared::default()
    }
}

impl PartialEq for Prepared {
    fn eq(&self, _: &Prepared) -> bool {
        true
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Prepared(set)"
        } else {
            "Prepared(empty)"
        })
    }
}

/// How deep a delegation chain is read; deeper ones end in an empty (unmatchable) actor.
const MAX_DELEGATION_DEPTH: usize = 16;

/// The actors of nested `act` claims, outermost (current) first.
fn actor_chain(claims: &Map<String, Value>) -> Vec<String> {
    let mut actors = Vec::new();
    let mut next = claims.get("act");
    while let Some(act) = next {
        if actors.len() == MAX_DELEGATION_DEPTH {
            actors.push(String::new());
            break;
        }
        let sub = act
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && header_safe(s) && !s.contains(','));
        actors.push(sub.unwrap_or_default().to_owned());
        next = act.as_object().and_then(|a| a.get("act"));
    }
    actors
}

// === impl IdentityBuilder ===

/// How a verified set of claims becomes an [`Identity`]: claim headers and `claims_mapping`.
#[derive(Debug, Default)]
pub struct IdentityBuilder {
    headers: Box<[(Box<str>, Arc<str>)]>,
    mapping: Box<[(Box<str>, Box<str>)]>,
    machine_suffix: MachineSuffix,
}

/// Which `sub` suffix marks a client-credentials token (a provider's `machine_subject_suffix`). Auth0 gives
/// its machine tokens a `sub` of `<client id>@clients`; another issuer may let a person pick a name ending
/// in `@clients`, so the rule applies only where the provider says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MachineSuffix {
    /// `@clients` for an Auth0 issuer (`https://…auth0.com`), no suffix rule for any other. The default.
    #[default]
    Auto,
    /// This suffix, for every issuer of the provider.
    Fixed(Box<str>),
    /// No suffix rule.
    Off,
}

// === impl MachineSuffix ===

impl MachineSuffix {
    /// From a provider's `machine_subject_suffix`: unset is [`MachineSuffix::Auto`], `""` turns it off.
    pub fn from_config(value: Option<&str>) -> MachineSuffix {
        match value {
            None => MachineSuffix::Auto,
            Some("") => MachineSuffix::Off,
            Some(suffix) => MachineSuffix::Fixed(Box::from(suffix)),
        }
    }

    /// The suffix that applies to a token from `issuer`.
    fn for_issuer(&self, issuer: &str) -> Option<&str> {
        match self {
            MachineSuffix::Auto => is_auth0(issuer).then_some("@clients"),
            MachineSuffix::Fixed(suffix) => Some(suffix),
            MachineSuffix::Off => None,
        }
    }
}

/// An Auth0 tenant's issuer: `https://<tenant>[.<region>].auth0.com/`.
fn is_auth0(issuer: &str) -> bool {
    url::Url::parse(issuer).is_ok_and(|url| {
        url.scheme() == "https"
            && url
                .host_str()
                .is_some_and(|host| host.ends_with(".auth0.com"))
    })
}

// === impl IdentityBuilder ===

impl IdentityBuilder {
    pub fn new(
        claim_headers: &BTreeMap<String, String>,
        claims_mapping: &BTreeMap<String, String>,
    ) -> IdentityBuilder {
        IdentityBuilder {
            headers: claim_headers
                .iter()
                .map(|(claim, header)| (Box::from(claim.as_str()), Arc::from(header.as_str())))
                .collect(),
            mapping: claims_mapping
                .iter()
                .map(|(claim, attr)| (Box::from(claim.as_str()), Box::from(attr.as_str())))
                .collect(),
            machine_suffix: MachineSuffix::Auto,
        }
    }

    /// The provider's `machine_subject_suffix` rule.
    pub fn with_machine_suffix(mut self, suffix: MachineSuffix) -> IdentityBuilder {
        self.machine_suffix = suffix;
        self
    }

    /// Settings with a `claims_mapping` only (the providers that set no claim headers).
    pub fn mapping_only(claims_mapping: &BTreeMap<String, String>) -> IdentityBuilder {
        IdentityBuilder::new(&Default::default(), claims_mapping)
    }

    /// The identity of a provider that names its principal itself (API keys, webhooks, GitHub, mTLS,
    /// anonymous): the principal is `sub`, the provider's attributes are also claims (as arrays), the
    /// `claims_mapping` adds to them, and `scopes` is the `scopes` attribute.
    pub fn for_principal(&self, provider: &Arc<str>, principal: Principal) -> Identity {
        let Principal {
            name,
            kind,
            issuer,
            attributes,
            mut claims,
        } = principal;
        claims.insert("sub".into(), Value::from(name.as_str()));
        let mut attributes: BTreeMap<String, Vec<String>> = attributes
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.into_iter()
                        .filter(|v| header_safe(v) && !v.contains(','))
                        .collect(),
                )
            })
            .collect();
        for (k, v) in &attributes {
            claims
                .entry(k.clone())
                .or_insert_with(|| Value::from(v.clone()));
        }
        for (k, v) in map_claims(&self.mapping, &claims) {
            attributes.entry(k).or_default().extend(v);
        }
        let scopes = attributes
            .get("scopes")
            .map(|s| s.join(" "))
            .unwrap_or_default();
        Identity {
            provider: Arc::clone(provider),
            subject: Some(name),
            kind,
            client_id: None,
            attributes,
            issuer,
            scopes,
            headers: Vec::new(),
            claims,
            expires_at: i64::MAX,
            actors: Vec::new(),
            dpop_bound: false,
            prepared: Prepared::default(),
        }
    }

    /// Builds the identity of verified claims (a JWT payload, an introspection answer, …).
    pub fn claims_identity(
        &self,
        provider: &Arc<str>,
        issuer: Arc<str>,
        claims: Map<String, Value>,
        expires_at: i64,
    ) -> Identity {
        let subject = claims
            .get("sub")
            .or_else(|| claims.get("username"))
            .and_then(Value::as_str)
            .filter(|s| header_safe(s))
            .map(str::to_owned);
        let scopes = scopes(&claims);
        let headers = self
            .headers
            .iter()
            .filter_map(|(claim, header)| {
                let value = claims.get(&**claim).and_then(claim_header_value)?;
                Some((Arc::clone(header), value))
            })
            .collect();
        let suffix = self.machine_suffix.for_issuer(&issuer);
        let (kind, client_id) = principal_kind(&claims, subject.as_deref(), suffix);
        // A client acting for itself is its own principal (RFC 7662 §2.2 `client_id`).
        let subject = subject.or_else(|| client_id.clone());
        Identity {
            provider: Arc::clone(provider),
            subject,
            kind,
            client_id,
            attributes: map_claims(&self.mapping, &claims),
            issuer,
            scopes,
            headers,
            actors: actor_chain(&claims),
            claims,
            expires_at,
            dpop_bound: false,
            prepared: Prepared::default(),
        }
    }
}

/// What a provider that names its principal itself knows of it.
pub struct Principal {
    pub name: String,
    pub kind: PrincipalKind,
    /// Empty when the provider has no issuer (API keys, mTLS).
    pub issuer: Arc<str>,
    /// The provider's own attributes (sent as `<prefix><name>` headers, also claims).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Further claims for policy and metadata (e.g. GitHub's numeric `id`).
    pub claims: Map<String, Value>,
}

// === impl Principal ===

impl Principal {
    pub fn new(name: impl Into<String>, kind: PrincipalKind) -> Principal {
        Principal {
            name: name.into(),
            kind,
            issuer: Arc::from(""),
            attributes: Default::default(),
            claims: Map::new(),
        }
    }
}

/// `claims_mapping`: a space-separated string becomes several values, an array stays a list.
pub fn map_claims(
    mapping: &[(Box<str>, Box<str>)],
    claims: &Map<String, Value>,
) -> BTreeMap<String, Vec<String>> {
    let mut attributes = BTreeMap::<String, Vec<String>>::new();
    for (claim, attribute) in mapping {
        let values: Vec<String> = match claims.get(&**claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect(),
            Some(Value::Number(n)) => vec![n.to_string()],
            Some(Value::Bool(b)) => vec![b.to_string()],
            _ => continue,
        };
        let values = values
            .into_iter()
            .filter(|v| header_safe(v) && !v.contains(','));
        attributes
            .entry(attribute.to_string())
            .or_default()
            .extend(values);
    }
    attributes
}

/// Human or machine, and the client of a machine token. A machine token is a client-credentials grant:
/// Auth0 marks it with `gty: client-credentials` and a `sub` ending in `@clients` (`suffix`, the
/// provider's rule for this issuer); generically it has no `sub` of its own, or one equal to its
/// `client_id`/`azp` (RFC 9068 §2.2).
fn principal_kind(
    claims: &Map<String, Value>,
    subject: Option<&str>,
    suffix: Option<&str>,
) -> (PrincipalKind, Option<String>) {
    let client = claims
        .get("client_id")
        .or_else(|| claims.get("azp"))
        .and_then(Value::as_str)
        .filter(|c| header_safe(c));
    let machine = claims.get("gty").and_then(Value::as_str) == Some("client-credentials")
        || match subject {
            None => true,
            Some(sub) => suffix.is_some_and(|x| sub.ends_with(x)) || Some(sub) == client,
        };
    if machine {
        let client = client.or_else(|| {
            subject
                .zip(suffix)
                .and_then(|(s, x)| s.strip_suffix(x))
                .filter(|c| !c.is_empty())
        });
        (PrincipalKind::Machine, client.map(str::to_owned))
    } else {
        (PrincipalKind::Human, None)
    }
}

/// Scopes from `scope` (space-separated string, RFC 8693 §4.2) or `scp` (array or string).
fn scopes(claims: &Map<String, Value>) -> String {
    let joined = match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_ascii_whitespace().collect::<Vec<_>>().join(" "),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty() && !s.contains(' '))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    if header_safe(&joined) {
        joined
    } else {
        String::new()
    }
}

/// A claim as a header value: strings, numbers and booleans as they are, arrays of those joined with `,`.
/// An array element that itself contains `,` is dropped: it would read as several values upstream.
fn claim_header_value(value: &Value) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .filter_map(scalar)
            .filter(|v| !v.contains(','))
            .collect::<Vec<_>>()
            .join(","),
        other => scalar(other)?,
    };
    (!text.is_empty() && header_safe(&text)).then_some(text)
}

/// RFC 7519 §4.1.2 / RFC 7662 §2.2: `sub`, when present, is a non-empty string a header can carry. A `sub`
/// that is present but unusable (a number, control characters) rejects the credential rather than
/// falling back to `client_id`/`azp`, which would make the principal a machine.
pub fn unusable_subject(claims: &Map<String, Value>) -> bool {
    match claims.get("sub") {
        None => false,
        Some(Value::String(s)) => s.is_empty() || !header_safe(s),
        Some(_) => true,
    }
}

/// A value Envoy will accept in a header: no control characters (RFC 9110 §5.5).
pub fn header_safe(value: &str) -> bool {
    !value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

// === impl IdentityBuilder ===

impl IdentityBuilder {
    /// The identity of a request with no credential: an `anonymous` provider's, or on a route that allows
    /// anonymous access, the built-in one.
    pub fn anonymous(provider: &Arc<str>, principal: &str) -> Identity {
        IdentityBuilder::default().for_principal(
            provider,
            Principal::new(principal, PrincipalKind::Anonymous),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(scopes(&claims(serde_json::json!({"scope": "a  b"}))), "a b");
        assert_eq!(
            scopes(&claims(serde_json::json!({"scp": ["a", "b"]}))),
            "a b"
        );
        assert_eq!(scopes(&claims(serde_json::json!({"scp": "a b"}))), "a b");
        assert_eq!(scopes(&claims(serde_json::json!({}))), "");
    }

    #[test]
    fn claim_values_become_header_values() {
        use serde_json::json;
        assert_eq!(
            claim_header_value(&json!("a@b.c")).as_deref(),
            Some("a@b.c")
        );
        assert_eq!(claim_header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(claim_header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(
            claim_header_value(&json!(["a", 1, false])).as_deref(),
            Some("a,1,false")
        );
        assert_eq!(claim_header_value(&json!({"a": 1})), None);
        assert_eq!(
            claim_header_value(&json!("evil\r\nx-auth-subject: root")),
            None
        );
    }

    #[test]
    fn the_actor_chain_is_read_outermost_first() {
        use serde_json::json;
        let chain = |v: Value| actor_chain(v.as_object().unwrap());
        assert!(chain(json!({"sub": "u"})).is_empty());
        assert_eq!(
            chain(json!({"sub": "u", "act": {"sub": "agent", "act": {"sub": "broker"}}})),
            ["agent", "broker"]
        );
        assert_eq!(chain(json!({"act": {"sub": 7}})), [""]);
        assert_eq!(chain(json!({"act": "agent"})), [""]);
        let mut deep = json!({"sub": "x"});
        for _ in 0..40 {
            deep = json!({"sub": "x", "act": deep});
        }
        let deep = chain(json!({"act": deep}));
        assert_eq!(deep.len(), MAX_DELEGATION_DEPTH + 1);
        assert_eq!(deep.last().map(String::as_str), Some(""));
    }

    #[test]
    fn machine_tokens_are_recognised() {
        use serde_json::json;
        let kind_with = |v: Value, suffix: Option<&str>| {
            let claims = v.as_object().unwrap().clone();
            let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
            principal_kind(&claims, sub.as_deref(), suffix)
        };
        let kind = |v: Value| kind_with(v, Some("@clients"));
        let human = (PrincipalKind::Human, None);
        let machine = |c: &str| (PrincipalKind::Machine, Some(c.to_owned()));
        assert_eq!(kind(json!({"sub": "auth0|123", "azp": "spa"})), human);
        assert_eq!(
            kind(json!({"sub": "abc@clients", "azp": "abc", "gty": "client-credentials"})),
            machine("abc")
        );
        assert_eq!(kind(json!({"sub": "abc@clients"})), machine("abc"));
        assert_eq!(
            kind(json!({"sub": "svc", "client_id": "svc"})),
            machine("svc")
        );
        assert_eq!(kind(json!({"client_id": "svc"})), machine("svc"));
        // Without a suffix rule, `@clients` is just a name.
        assert_eq!(kind_with(json!({"sub": "abc@clients"}), None), human);
        assert_eq!(
            kind_with(json!({"sub": "abc@svc", "azp": "spa"}), Some("@svc")),
            machine("spa")
        );
    }

    #[test]
    fn the_suffix_rule_is_per_provider_and_issuer() {
        let auto = MachineSuffix::from_config(None);
        assert_eq!(
            auto.for_issuer("https://tenant.eu.auth0.com/"),
            Some("@clients")
        );
        assert_eq!(auto.for_issuer("https://idp.example/"), None);
        assert_eq!(auto.for_issuer("https://auth0.com.evil.example/"), None);
        assert_eq!(auto.for_issuer("http://tenant.auth0.com/"), None);
        let fixed = MachineSuffix::from_config(Some("@clients"));
        assert_eq!(fixed.for_issuer("https://login.example/"), Some("@clients"));
        let off = MachineSuffix::from_config(Some(""));
        assert_eq!(off.for_issuer("https://tenant.auth0.com/"), None);
    }
}
