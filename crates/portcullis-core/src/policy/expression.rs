//! `require: {expression: '<CEL>'}`: a condition in the Common Expression Language over the identity and
//! the request, compiled once at config load and evaluated per request.
//!
//! The variables (and nothing else) are:
//! - `claims`: the verified claims, or an introspection, webhook, API key or GitHub answer's attributes;
//! - `identity`: `subject`, `issuer`, `provider`, `kind` (`human`/`machine`), `client_id`, `scopes` and
//!   `permissions` (lists of strings), `organization` (`org_id`, also under `claims_namespace`);
//! - `request`: `method`, `path` (no query), `host`, `scheme`, `headers` (lower-case names, repeated
//!   headers joined with `,`), `query` (name → first value, as sent: not percent-decoded);
//! - `route`: `name`;
//! - `context_extensions`: Envoy's per-route map;
//! - `now`: the check's time as a `timestamp` (from the injectable clock).
//!
//! A syntax error or a name that is not one of these is a configuration problem with its field path. An
//! evaluation that fails (a claim that is absent, a type that does not fit) or that does not yield a bool
//! is a denial (`expression_error`), never an allow; `false` is a denial (`expression_false`). Values are
//! borrowed from the identity and the request, and only the variables the expression names are built.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::Val;
use cel::{Context, Env, Program, Value};
use serde_json::Value as Json;

use super::claims::ClaimPath;
use crate::config::Problems;
use crate::identity::Identity;
use crate::request::RequestView;

/// The names an expression may use, in the order the documentation lists them.
pub const VARIABLES: [&str; 6] = [
    "claims",
    "identity",
    "request",
    "route",
    "context_extensions",
    "now",
];

/// CEL's type names, which an expression may name (`type(x) == string`).
const TYPE_NAMES: [&str; 13] = [
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "timestamp",
    "duration",
];

/// The longest header value, query string or path an expression reads; a request with a longer one fails
/// the expression (a denial). Together with the one-level rule for comprehensions this bounds the work
/// of an expression per check.
const MAX_INPUT_BYTES: usize = 8 * 1024;

/// A value shown by `explain` in place of a credential.
const REDACTED: &str = "(redacted)";

/// A compiled expression.
pub(super) struct Expression {
    source: Box<str>,
    program: Program,
    uses: Uses,
    /// Each variable path the expression reads (`claims.email`, `request.headers["x-tenant"]`), compiled
    /// on its own, for `explain`.
    inputs: Box<[(Box<str>, Program)]>,
    /// Where `identity.organization` is read.
    organization: ClaimPath,
    /// The request headers it reads, for the repeated-header rule.
    header_reads: HeaderReads,
}

/// The request headers an expression reads: by literal name (`request.headers["x-tenant"]`,
/// `request.headers.x_tenant`), or any of them (the whole map or `request`, an index that is not a literal).
#[derive(Debug, Default, Clone)]
pub(super) struct HeaderReads {
    /// Lower-case names read by a literal index.
    pub names: Vec<Box<str>>,
    /// The map itself is read (`'x' in request.headers`, `request.headers[claims.h]`, `request`): which
    /// headers count cannot be known before the request, so any repeated header is refused.
    pub any: bool,
}

/// Which variables an expression reads, so the others are never built.
#[derive(Debug, Default, Clone, Copy)]
struct Uses {
    claims: bool,
    identity: bool,
    request: bool,
    headers: bool,
    query: bool,
    route: bool,
    context_extensions: bool,
    now: bool,
}

/// What an expression is evaluated over.
pub(super) struct Input<'a> {
    pub identity: &'a Identity,
    pub request: &'a RequestView<'a>,
    pub route: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// Why an expression did not yield `true`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Failure {
    /// It yielded `false`.
    False,
    /// It failed, or yielded something other than a bool: the message is for `explain`, never the client.
    Error(String),
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The one CEL environment: the standard library with its macros, and the string extensions.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The extension only adds functions; should it ever fail, the standard library still works.
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
}

// === impl Expression ===

impl Expression {
    /// Compiles `source`, reporting a syntax error or an unknown name at `path`.
    pub(super) fn compile(
        problems: &mut Problems,
        path: &str,
        source: &str,
        organization: ClaimPath,
    ) -> Option<Expression> {
        if source.trim().is_empty() {
            problems.add(path, "must not be empty");
            return None;
        }
        let program = match env().compile(source) {
            Ok(program) => program,
            Err(e) => {
                problems.add(path, format!("is not a valid CEL expression: {e}"));
                return None;
            }
        };
        let mut walk = Walk::default();
        walk.expr(program.expression(), &mut Vec::new());
        for name in &walk.unknown {
            problems.add(
                path,
                format!(
                    "unknown variable `{name}` (the variables are {})",
                    VARIABLES.join(", ")
                ),
            );
        }
        if !walk.unknown.is_empty() {
            return None;
        }
        if walk.nested_unbounded {
            problems.add(
                path,
                "a comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) over request or token data \
                 inside another one can cost seconds per check; nest only over a literal list",
            );
            return None;
        }
        let inputs = walk
            .inputs
            .into_iter()
            .filter_map(|input| {
                let program = env().compile(&input).ok()?;
                Some((input.into_boxed_str(), program))
            })
            .collect();
        Some(Expression {
            source: source.into(),
            program,
            uses: walk.uses,
            inputs,
            organization,
            header_reads: walk.header_reads,
        })
    }

    /// The request headers this expression reads.
    pub(super) fn header_reads(&self) -> &HeaderReads {
        &self.header_reads
    }

    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// `Ok` when the expression yields `true`.
    pub(super) fn evaluate(&self, input: &Input<'_>) -> Result<(), Failure> {
        match self.run(&self.program, input) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(Value::Bool(false)) => Err(Failure::False),
            Ok(other) => Err(Failure::Error(format!(
                "yields {}, not a bool",
                other.type_of()
            ))),
            Err(e) => Err(Failure::Error(e)),
        }
    }

    /// Each variable path the expression reads and its value (JSON, or the error text), for `explain`.
    /// Credentials (`authorization`, `cookie`, `proxy-authorization` headers, and whole header maps) are
    /// redacted.
    pub(super) fn inputs(&self, input: &Input<'_>) -> BTreeMap<String, Json> {
        self.inputs
            .iter()
            .map(|(name, program)| {
                let value = if is_credential(name) {
                    Json::from(REDACTED)
                } else {
                    match self.run(program, input) {
                        Ok(value) => to_json(&value),
                        Err(e) => Json::from(format!("error: {e}")),
                    }
                };
                (name.to_string(), value)
            })
            .collect()
    }

    /// Runs a program over the variables this expression uses. The interpreter is third-party code: a
    /// panic inside it is an evaluation error, not a crashed check.
    fn run(&self, program: &Program, input: &Input<'_>) -> Result<Value, String> {
        // The work an expression does is linear in what it reads (nested comprehensions over request or
        // token data are refused when it is compiled); what it reads is bounded here, so no request can
        // make it cost more than a few milliseconds. Too large an input fails the expression: a denial.
        if self.uses.headers {
            let request = input.request;
            // One pass over the lines (looking each name up again would be quadratic in the headers).
            if let Some((name, _)) = request
                .headers
                .entries()
                .find(|(_, value)| value.len() > MAX_INPUT_BYTES)
            {
                return Err(format!(
                    "the request header `{name}` is longer than {MAX_INPUT_BYTES} bytes, more than an expression reads"
                ));
            }
        }
        if self.uses.query && input.request.query.len() > MAX_INPUT_BYTES {
            return Err(format!(
                "the query string is longer than {MAX_INPUT_BYTES} bytes, more than an expression reads"
            ));
        }
        if self.uses.request && input.request.path.len() > MAX_INPUT_BYTES {
            return Err(format!(
                "the path is longer than {MAX_INPUT_BYTES} bytes, more than an expression reads"
            ));
        }
        catch_unwind(AssertUnwindSafe(|| {
            let mut context = Context::with_env(Arc::clone(env()));
            self.bind(&mut context, input);
            program.execute(&context).map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("the expression interpreter failed".to_owned()))
    }

    fn bind<'v>(&self, context: &mut Context<'_, 'v>, input: &Input<'v>) {
        let uses = self.uses;
        let identity = input.identity;
        let request = input.request;
        if uses.claims {
            context.add_variable_as_val("claims", json_object(&identity.claims));
        }
        if uses.identity {
            context.add_variable_as_val("identity", self.identity(identity));
        }
        if uses.request {
            let mut map = HashMap::with_capacity(6);
            put(&mut map, "method", string(request.method));
            put(&mut map, "path", string(request.path));
            put(&mut map, "host", string(request.host));
            put(&mut map, "scheme", string(request.scheme));
            if uses.headers {
                put(&mut map, "headers", headers(request));
            }
            if uses.query {
                put(&mut map, "query", query(request.query));
            }
            context.add_variable_as_val("request", Box::new(CelMap::from(map)));
        }
        if uses.route {
            let mut map = HashMap::with_capacity(1);
            put(&mut map, "name", string(input.route));
            context.add_variable_as_val("route", Box::new(CelMap::from(map)));
        }
        if uses.context_extensions {
            let mut map = HashMap::new();
            for (k, v) in request.context_extensions.into_iter().flatten() {
                put(&mut map, k, string(v));
            }
            context.add_variable_as_val("context_extensions", Box::new(CelMap::from(map)));
        }
        if uses.now {
            let now = chrono::DateTime::from_timestamp(input.now, 0)
                .unwrap_or_default()
                .fixed_offset();
            context.add_variable_as_val("now", Box::new(CelTimestamp::from(now)));
        }
    }

    fn identity<'v>(&self, identity: &'v Identity) -> Box<dyn Val + 'v> {
        let optional = |value: Option<&'v str>| value.map_or_else(null, string);
        let mut map = HashMap::with_capacity(8);
        put(&mut map, "subject", optional(identity.subject.as_deref()));
        put(&mut map, "issuer", string(&identity.issuer));
        put(&mut map, "provider", string(&identity.provider));
        put(&mut map, "kind", string(identity.kind.as_str()));
        put(
            &mut map,
            "client_id",
            optional(identity.client_id.as_deref()),
        );
        put(&mut map, "scopes", words(&identity.scopes));
        let permissions = match identity.claims.get("permissions") {
            Some(Json::Array(items)) => list(items.iter().filter_map(Json::as_str).map(string)),
            Some(Json::String(text)) => words(text),
            _ => list(std::iter::empty()),
        };
        put(&mut map, "permissions", permissions);
        let organization = self
            .organization
            .lookup(&identity.claims)
            .and_then(Json::as_str);
        put(&mut map, "organization", optional(organization));
        put(
            &mut map,
            "actors",
            list(identity.actors.iter().map(|a| string(a))),
        );
        put(
            &mut map,
            "actor",
            optional(identity.actors.first().map(String::as_str)),
        );
        put(
            &mut map,
            "dpop_bound",
            Box::new(CelBool::from(identity.dpop_bound)),
        );
        Box::new(CelMap::from(map))
    }
}

/// A CEL value as JSON for `explain`: timestamps as RFC 3339, what JSON cannot hold as its type name.
fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::from(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => Json::from(*f),
        Value::String(s) => Json::from(s.as_str()),
        Value::List(items) => items.iter().map(to_json).collect(),
        Value::Map(map) => map
            .map
            .iter()
            .map(|(k, v)| (k.to_string(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Timestamp(t) => Json::from(t.to_rfc3339()),
        other => Json::from(format!("({})", other.type_of())),
    }
}

/// Whether an input path names a credential or a whole map that holds one.
fn is_credential(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower == "request"
        || lower == "request.headers"
        || lower == "request.query"
        || CREDENTIAL_WORDS.iter().any(|word| lower.contains(word))
}

/// Words in a header or query parameter name that say it may hold a credential (`authorization`,
/// `proxy-authorization`, `cookie`, `x-api-key`, `access_token`, `dpop`, …): `explain` never shows them.
const CREDENTIAL_WORDS: [&str; 8] = [
    "authorization",
    "cookie",
    "key",
    "token",
    "secret",
    "password",
    "dpop",
    "session",
];

type ValMap<'v> = HashMap<CelMapKey<'v>, Box<dyn Val + 'v>>;

fn put<'v>(map: &mut ValMap<'v>, key: &'v str, value: Box<dyn Val + 'v>) {
    map.insert(CelMapKey::String(CelString::from(key)), value);
}

fn string(value: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(value))
}

fn null<'v>() -> Box<dyn Val + 'v> {
    Box::new(CelNull)
}

fn list<'v>(items: impl Iterator<Item = Box<dyn Val + 'v>>) -> Box<dyn Val + 'v> {
    Box::new(CelList::from(items.collect::<Vec<_>>()))
}

/// A space-separated list (scopes) as a list of strings.
fn words(text: &str) -> Box<dyn Val + '_> {
    list(text.split_ascii_whitespace().map(string))
}

fn json_object(object: &serde_json::Map<String, Json>) -> Box<dyn Val + '_> {
    let map: ValMap<'_> = object
        .iter()
        .map(|(k, v)| (CelMapKey::String(CelString::from(k.as_str())), json(v)))
        .collect();
    Box::new(CelMap::from(map))
}

/// A JSON value as CEL: integers as `int` (or `uint` beyond `i64`), other numbers as `double`.
fn json(value: &Json) -> Box<dyn Val + '_> {
    match value {
        Json::Null => null(),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => string(s),
        Json::Array(items) => list(items.iter().map(json)),
        Json::Object(object) => json_object(object),
    }
}

/// Request headers by lower-case name; repeated headers joined with `,` (RFC 9110 §5.3).
fn headers<'v>(request: &RequestView<'v>) -> Box<dyn Val + 'v> {
    let mut joined: HashMap<Cow<'v, str>, Cow<'v, str>> = HashMap::new();
    for name in request.headers.names() {
        let key: Cow<'v, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if joined.contains_key(&key) {
            continue;
        }
        let value = match request.headers.count(&key) {
            0 | 1 => Cow::Borrowed(request.headers.get(&key).unwrap_or("")),
            _ => Cow::Owned(all_values(request, &key)),
        };
        joined.insert(key, value);
    }
    let map: ValMap<'v> = joined
        .into_iter()
        .map(|(k, v)| {
            let value: Box<dyn Val + 'v> = Box::new(CelString::from(v));
            (CelMapKey::String(CelString::from(k)), value)
        })
        .collect();
    Box::new(CelMap::from(map))
}

/// Every value of a repeated header line, joined with `,`.
fn all_values(request: &RequestView<'_>, name: &str) -> String {
    match request.headers {
        crate::request::Headers::List(list) => list
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        crate::request::Headers::Pairs(pairs) => pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
            .join(","),
        // A map holds each name once.
        crate::request::Headers::Map(_) | crate::request::Headers::Entries(_) => {
            request.headers.get(name).unwrap_or_default().to_owned()
        }
    }
}

/// The query string as name → first value, both as sent.
fn query(query: &str) -> Box<dyn Val + '_> {
    let mut map: ValMap<'_> = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(CelMapKey::String(CelString::from(name)))
            .or_insert_with(|| string(value));
    }
    Box::new(CelMap::from(map))
}

/// What a walk over the expression finds: names that are not variables, the variables used, and the
/// paths it reads.
#[derive(Default)]
struct Walk {
    unknown: Vec<String>,
    uses: Uses,
    inputs: Vec<String>,
    header_reads: HeaderReads,
    /// How many comprehensions over data (not a literal list or map) enclose the expression walked.
    data_loops: usize,
    /// A comprehension over data inside another one: quadratic (or worse) in the input.
    nested_unbounded: bool,
}

// === impl Walk ===

impl Walk {
    /// `bound` holds the names a comprehension (`exists(x, …)`) introduces around this expression.
    fn expr(&mut self, e: &IdedExpr, bound: &mut Vec<String>) {
        if let Some((root, path)) = variable_path(e) {
            if !bound.contains(&root) {
                self.variable(&root, &path);
                return;
            }
        }
        match &e.expr {
            Expr::Ident(name) => {
                let known = name.starts_with('@')
                    || bound.iter().any(|b| b == name)
                    || TYPE_NAMES.contains(&name.as_str());
                if !known && !self.unknown.contains(name) {
                    self.unknown.push(name.clone());
                }
            }
            Expr::Select(select) => self.expr(&select.operand, bound),
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.expr(target, bound);
                }
                for arg in &call.args {
                    self.expr(arg, bound);
                }
            }
            Expr::Comprehension(comp) => {
                self.expr(&comp.iter_range, bound);
                self.expr(&comp.accu_init, bound);
                // A literal list or map has a fixed size; anything else grows with the request or token.
                let over_data = !matches!(comp.iter_range.expr, Expr::List(_) | Expr::Map(_));
                if over_data {
                    self.nested_unbounded |= self.data_loops > 0;
                    self.data_loops += 1;
                }
                let depth = bound.len();
                bound.push(comp.iter_var.clone());
                bound.extend(comp.iter_var2.clone());
                bound.push(comp.accu_var.clone());
                self.expr(&comp.loop_cond, bound);
                self.expr(&comp.loop_step, bound);
                self.expr(&comp.result, bound);
                bound.truncate(depth);
                if over_data {
                    self.data_loops -= 1;
                }
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.expr(element, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr {
                        self.expr(&entry.key, bound);
                        self.expr(&entry.value, bound);
                    }
                }
            }
            Expr::Struct(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// One read of a variable: `path` is its CEL text (`claims.email`), `root` the variable.
    fn variable(&mut self, root: &str, path: &[String]) {
        let uses = &mut self.uses;
        let field = path.get(1).map(String::as_str);
        match root {
            "claims" => uses.claims = true,
            "identity" => uses.identity = true,
            "request" => {
                uses.request = true;
                uses.headers |= field.is_none_or(|f| f == ".headers");
                uses.query |= field.is_none_or(|f| f == ".query");
                if field.is_none_or(|f| f == ".headers") {
                    match path.get(2).and_then(|key| header_key(key)) {
                        Some(name) if !self.header_reads.names.contains(&name) => {
                            self.header_reads.names.push(name);
                        }
                        Some(_) => {}
                        None => self.header_reads.any = true,
                    }
                }
            }
            "route" => uses.route = true,
            "context_extensions" => uses.context_extensions = true,
            "now" => uses.now = true,
            other => {
                if !TYPE_NAMES.contains(&other) && !self.unknown.iter().any(|u| u == other) {
                    self.unknown.push(other.to_owned());
                }
                return;
            }
        }
        let text = path.concat();
        if !self.inputs.contains(&text) {
            self.inputs.push(text);
        }
    }
}

/// The lower-case header name of a path part after `request.headers` (`["x-tenant"]` or `.x_tenant`).
fn header_key(part: &str) -> Option<Box<str>> {
    let name = match part.strip_prefix('.') {
        Some(field) => field.to_owned(),
        None => serde_json::from_str::<String>(part.strip_prefix('[')?.strip_suffix(']')?).ok()?,
    };
    Some(name.to_ascii_lowercase().into())
}

/// `a.b.c` or `a.b["c"]`: the root identifier and the path's parts as CEL text (`a`, `.b`, `["c"]`).
fn variable_path(e: &IdedExpr) -> Option<(String, Vec<String>)> {
    match &e.expr {
        Expr::Ident(name) if !name.starts_with('@') => Some((name.clone(), vec![name.clone()])),
        Expr::Select(select) if !select.test => {
            let (root, mut parts) = variable_path(&select.operand)?;
            parts.push(format!(".{}", select.field));
            Some((root, parts))
        }
        Expr::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
            let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                return None;
            };
            let (root, mut parts) = variable_path(&call.args[0])?;
            let quoted = serde_json::to_string(key.as_ref() as &str).ok()?;
            parts.push(format!("[{quoted}]"));
            Some((root, parts))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::policy::claims::Namespaces;
    use crate::policy::testing::{identity, machine};
    use crate::request::Headers;

    const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z, a Tuesday

    fn compile(source: &str) -> Expression {
        let mut problems = Problems::default();
        let e = Expression::compile(
            &mut problems,
            "require.expression",
            source,
            ClaimPath::plain_then_namespaced("org_id", &Namespaces::default()),
        );
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        e.unwrap()
    }

    fn problems(source: &str) -> Vec<(String, String)> {
        let mut problems = Problems::default();
        let compiled = Expression::compile(
            &mut problems,
            "routes[0].require.expression",
            source,
            ClaimPath::plain_then_namespaced("org_id", &Namespaces::default()),
        );
        assert!(compiled.is_none());
        problems
            .0
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    fn eval(e: &Expression, id: &Identity, request: &RequestView<'_>) -> Result<(), Failure> {
        e.evaluate(&Input {
            identity: id,
            request,
            route: "api",
            now: NOW,
        })
    }

    fn get(path: &str) -> RequestView<'_> {
        RequestView::new("GET", path, "api.example.com", Headers::Pairs(&[]), "")
    }

    #[test]
    fn claims() {
        let e = compile("claims.email.endsWith('@example.com') && claims.email_verified");
        let view = get("/");
        let ok = identity(
            "",
            json!({"email": "ada@example.com", "email_verified": true}),
        );
        assert_eq!(eval(&e, &ok, &view), Ok(()));
        let other = identity("", json!({"email": "eve@evil.com", "email_verified": true}));
        assert_eq!(eval(&e, &other, &view), Err(Failure::False));
        let nested = compile("claims.address.country in ['DE', 'FR'] && claims.level >= 3");
        let id = identity("", json!({"address": {"country": "DE"}, "level": 3}));
        assert_eq!(eval(&nested, &id, &view), Ok(()));
        let roles = compile("claims.roles.exists(r, r == 'admin')");
        let admin = identity("", json!({"roles": ["user", "admin"]}));
        assert_eq!(eval(&roles, &admin, &view), Ok(()));
        let user = identity("", json!({"roles": ["user"]}));
        assert_eq!(eval(&roles, &user, &view), Err(Failure::False));
    }

    #[test]
    fn identity_fields() {
        let e = compile(
            "identity.kind == 'machine' && 'write:data' in identity.scopes \
             && identity.subject == 'svc@clients' && identity.provider == 'auth0' \
             && identity.issuer == 'https://example.eu.auth0.com/' \
             && identity.organization == 'org_1' && 'deploy' in identity.permissions",
        );
        let view = get("/");
        let robot = machine(
            "svc",
            "write:data",
            json!({"org_id": "org_1", "permissions": ["deploy"]}),
        );
        assert_eq!(eval(&e, &robot, &view), Ok(()));
        let person = identity("write:data", json!({"org_id": "org_1"}));
        assert_eq!(eval(&e, &person, &view), Err(Failure::False));
        let no_org = compile("identity.organization == null");
        assert_eq!(eval(&no_org, &identity("", json!({})), &view), Ok(()));
    }

    #[test]
    fn delegation_and_binding_fields() {
        let view = get("/");
        let mut agent = identity("", json!({}));
        agent.actors = vec!["agent-7".into(), "orchestrator".into()];
        agent.dpop_bound = true;
        let e = compile(
            "identity.actor == 'agent-7' && 'orchestrator' in identity.actors \
             && size(identity.actors) == 2 && identity.dpop_bound",
        );
        assert_eq!(eval(&e, &agent, &view), Ok(()));
        let plain = identity("", json!({}));
        assert_eq!(eval(&e, &plain, &view), Err(Failure::False));
        let direct =
            compile("identity.actor == null && size(identity.actors) == 0 && !identity.dpop_bound");
        assert_eq!(eval(&direct, &plain, &view), Ok(()));
        assert_eq!(eval(&direct, &agent, &view), Err(Failure::False));
    }

    #[test]
    fn request_fields() {
        let e = compile(
            "request.method == 'GET' && request.path.startsWith('/users/' + identity.subject + '/') \
             && request.host == 'api.example.com' && request.headers['x-tenant'] == 't1' \
             && request.query['page'] == '2' && request.scheme == 'https'",
        );
        let pairs = [("X-Tenant", "t1")];
        let mut view = RequestView::new(
            "GET",
            "/users/auth0|alice/files?page=2&page=3",
            "api.example.com",
            Headers::Pairs(&pairs),
            "",
        );
        view.scheme = "https";
        let id = identity("", json!({}));
        assert_eq!(eval(&e, &id, &view), Ok(()));
        let mut other = view;
        other.path = "/users/auth0|bob/files";
        assert_eq!(eval(&e, &id, &other), Err(Failure::False));
        // A header that is not sent is a missing key: an error, so a denial.
        let bare = RequestView {
            headers: Headers::Pairs(&[]),
            ..view
        };
        assert!(matches!(eval(&e, &id, &bare), Err(Failure::Error(_))));
        let guarded = compile("'x-tenant' in request.headers");
        assert_eq!(eval(&guarded, &id, &bare), Err(Failure::False));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let list = vec![
            ("x-group".to_owned(), "a".to_owned()),
            ("X-Group".to_owned(), "b".to_owned()),
        ];
        let view = RequestView::new("GET", "/", "h", Headers::List(&list), "");
        let e = compile("request.headers['x-group'] == 'a,b'");
        assert_eq!(eval(&e, &identity("", json!({})), &view), Ok(()));
    }

    #[test]
    fn route_context_extensions_and_now() {
        let e = compile("route.name == 'api' && context_extensions.team == 'payments'");
        let extensions = HashMap::from([("team".to_owned(), "payments".to_owned())]);
        let view = get("/").with_context_extensions(&extensions);
        assert_eq!(eval(&e, &identity("", json!({})), &view), Ok(()));
        // 22:13 UTC on a Tuesday; 23:13 in Berlin.
        let hours = compile("now.getHours() == 22 && now.getHours('Europe/Berlin') == 23");
        assert_eq!(eval(&hours, &identity("", json!({})), &view), Ok(()));
        let working = compile(
            "now.getDayOfWeek('Europe/Berlin') in [1, 2, 3, 4, 5] \
             && now.getHours('Europe/Berlin') >= 9 && now.getHours('Europe/Berlin') < 18",
        );
        assert_eq!(
            eval(&working, &identity("", json!({})), &view),
            Err(Failure::False)
        );
    }

    #[test]
    fn nested_comprehensions_over_data_are_refused_and_inputs_are_bounded() {
        for source in [
            "request.headers['x'].split('').exists(a, request.headers['x'].split('').exists(b, a == b))",
            "claims.roles.all(r, claims.groups.exists(g, g == r))",
            "claims.roles.map(r, claims.groups.filter(g, g == r)).size() > 0",
        ] {
            let errors = problems(source);
            assert_eq!(errors.len(), 1, "{source}: {errors:?}");
            assert!(errors[0].1.contains("nest only over a literal list"), "{errors:?}");
        }
        // One level over data, and nesting over a literal list, are linear in the input.
        for source in [
            "claims.roles.exists(r, ['admin', 'ops'].exists(a, a == r))",
            "['admin', 'ops'].all(a, claims.roles.exists(r, r == a))",
            "claims.roles.map(r, r + 'x').exists(r, r == 'adminx')",
        ] {
            compile(source);
        }
        // A header longer than an expression reads fails the expression: a denial, not seconds of work.
        let e = compile("request.headers['x'].split('').exists(a, a == 'z')");
        let long = "y".repeat(MAX_INPUT_BYTES + 1);
        let pairs = [("x", long.as_str())];
        let view = RequestView::new("GET", "/", "h", Headers::Pairs(&pairs), "");
        let id = identity("", json!({}));
        assert!(
            matches!(eval(&e, &id, &view), Err(Failure::Error(m)) if m.contains("longer than"))
        );
        let fits = "y".repeat(MAX_INPUT_BYTES);
        let pairs = [("x", fits.as_str())];
        let view = RequestView::new("GET", "/", "h", Headers::Pairs(&pairs), "");
        assert!(matches!(eval(&e, &id, &view), Err(Failure::False)));
    }

    #[test]
    fn runtime_errors_are_failures_not_allows() {
        let view = get("/");
        let id = identity("", json!({"level": "3", "roles": ["a"]}));
        for source in [
            "claims.email == 'a@example.com'", // absent claim
            "claims.level > 2",                // a string, not an int
            "claims.roles",                    // not a bool
            "1 / 0 == 1",
            "claims.level.nosuchfunction()",
        ] {
            let e = compile(source);
            assert!(
                matches!(eval(&e, &id, &view), Err(Failure::Error(_))),
                "{source}"
            );
        }
    }

    #[test]
    fn compile_errors_name_the_field() {
        let found = problems("claims.email ==");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "routes[0].require.expression");
        assert!(
            found[0].1.starts_with("is not a valid CEL expression"),
            "{}",
            found[0].1
        );
        let found = problems("user.email == 'x' || secret && claims.a");
        assert_eq!(
            found,
            [
                (
                    "routes[0].require.expression".to_owned(),
                    "unknown variable `user` (the variables are claims, identity, request, route, context_extensions, now)".to_owned()
                ),
                (
                    "routes[0].require.expression".to_owned(),
                    "unknown variable `secret` (the variables are claims, identity, request, route, context_extensions, now)".to_owned()
                ),
            ]
        );
        assert_eq!(problems("  ")[0].1, "must not be empty");
        // A comprehension's own variable is not unknown, and does not leak out of it.
        compile("claims.roles.all(r, r.startsWith('x'))");
        assert!(problems("claims.roles.all(r, true) && r")[0]
            .1
            .contains("`r`"));
    }

    #[test]
    fn explain_inputs_show_values_and_hide_credentials() {
        let e = compile(
            "claims.email.endsWith('@example.com') && request.headers['authorization'] != '' \
             && request.headers['x-tenant'] == 't1' && claims.missing == 1",
        );
        let pairs = [("authorization", "Bearer secret"), ("x-tenant", "t1")];
        let view = RequestView::new("GET", "/", "h", Headers::Pairs(&pairs), "");
        let id = identity("", json!({"email": "ada@example.com"}));
        let inputs = e.inputs(&Input {
            identity: &id,
            request: &view,
            route: "api",
            now: NOW,
        });
        assert_eq!(inputs["claims.email"], json!("ada@example.com"));
        assert_eq!(
            inputs["request.headers[\"authorization\"]"],
            json!(REDACTED)
        );
        assert_eq!(inputs["request.headers[\"x-tenant\"]"], json!("t1"));
        for name in ["x-api-key", "proxy-authorization", "dpop", "x-session-id"] {
            let e = compile(&format!("request.headers['{name}'] != ''"));
            let pairs = [(name, "s3cr3t")];
            let view = RequestView::new("GET", "/", "h", Headers::Pairs(&pairs), "");
            let inputs = e.inputs(&Input {
                identity: &id,
                request: &view,
                route: "api",
                now: NOW,
            });
            assert_eq!(
                inputs[format!("request.headers[\"{name}\"]").as_str()],
                json!(REDACTED),
                "{name}"
            );
        }
        let e = compile("request.query['access_token'] != ''");
        let query_inputs = e.inputs(&Input {
            identity: &id,
            request: &RequestView::new(
                "GET",
                "/?access_token=s3cr3t",
                "h",
                Headers::Pairs(&[]),
                "",
            ),
            route: "api",
            now: NOW,
        });
        assert_eq!(
            query_inputs["request.query[\"access_token\"]"],
            json!(REDACTED)
        );
        assert!(inputs["claims.missing"]
            .as_str()
            .is_some_and(|s| s.starts_with("error: ")));
    }
}
