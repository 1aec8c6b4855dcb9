//! Which requests a route takes: host, path (exact, prefix or glob), method, headers and Envoy's
//! `context_extensions`, compiled once so that matching only compares borrowed strings.
//!
//! Paths are matched as sent, except that an exact `path` also matches with or without a trailing `/`.
//! Upstreams read near-variants of a path as the same resource (`/Admin`, `/admin;x`, `/admin%3Bx`,
//! `/admin.`, `/admin%20`), so [`canonical_path`] folds them (percent-decoding, `;` parameters and `#`
//! fragments cut, case folded, dot segments resolved, trailing dots and spaces dropped); the policy refuses a
//! request whose canonical path would take another route than its path as sent. A fragment is never part of
//! the path (RFC 3986 §3.5): `/admin#x` and `/admin%23x` are read as `/admin`, which upstream frameworks serve.

use super::explain::ExplainStep;
use crate::config::policy::{MatchConfig, ValueMatch};
use crate::config::Problems;
use crate::request::is_header_name;
use crate::request::RequestView;

/// A conjunction of conditions; an empty one matches every request (the default route).
#[derive(Debug, Default)]
pub(super) struct Matcher(Box<[Condition]>);

#[derive(Debug)]
enum Condition {
    Host(HostPattern),
    /// The pattern as written, and the same pattern in canonical form (for [`canonical_path`]s).
    Path(PathPattern, PathPattern),
    Methods(Box<[Box<str>]>),
    Header(Box<str>, ValueTest),
    ContextExtension(Box<str>, ValueTest),
}

/// A route's host, for the route index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum HostKey<'a> {
    /// Lower-case host.
    Exact(&'a str),
    /// `.example.com` (from `*.example.com`).
    Suffix(&'a str),
    Any,
}

#[derive(Debug, PartialEq)]
enum HostPattern {
    /// Lower-case host.
    Exact(Box<str>),
    /// `*.example.com` kept as `.example.com`.
    Subdomain(Box<str>),
}

#[derive(Debug)]
enum PathPattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    Glob(Glob),
}

#[derive(Debug, PartialEq)]
enum ValueTest {
    Equals(Box<str>),
    Present(bool),
}

/// A path glob: literal segments, `*` for one non-empty segment, a final `**` for the rest.
#[derive(Debug)]
struct Glob {
    text: Box<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

// === impl Matcher ===

impl Matcher {
    pub(super) fn compile(problems: &mut Problems, path: &str, config: &MatchConfig) -> Matcher {
        let mut conditions = Vec::new();
        if let Some(host) = &config.host {
            match HostPattern::parse(host) {
                Ok(pattern) => conditions.push(Condition::Host(pattern)),
                Err(message) => problems.add(format!("{path}.host"), message),
            }
        }
        let paths = [
            ("path", &config.path),
            ("path_prefix", &config.path_prefix),
            ("path_glob", &config.path_glob),
        ];
        if paths.iter().filter(|(_, p)| p.is_some()).count() > 1 {
            problems.add(path, "give at most one of path, path_prefix, path_glob");
        }
        for (key, value) in paths {
            let Some(value) = value else { continue };
            let field = format!("{path}.{key}");
            if !value.starts_with('/') || value.contains(['?', '#']) {
                problems.add(field, "must start with `/` and contain no `?` or `#` (the query is never part of the path)");
                continue;
            }
            let folded = canonical_path(value).unwrap_or_else(|| value.clone());
            let (pattern, canonical) = match key {
                "path" => (
                    PathPattern::Exact(value.as_str().into()),
                    PathPattern::Exact(folded.into()),
                ),
                "path_prefix" => {
                    // `/api/` keeps its `/` so it still does not match `/apix`.
                    let mut folded = folded;
                    if value.ends_with('/') && !folded.ends_with('/') {
                        folded.push('/');
                    }
                    (
                        PathPattern::Prefix(value.as_str().into()),
                        PathPattern::Prefix(folded.into()),
                    )
                }
                _ => match (Glob::parse(value), Glob::parse(&value.to_ascii_lowercase())) {
                    (Ok(glob), Ok(lower)) => (PathPattern::Glob(glob), PathPattern::Glob(lower)),
                    (Err(message), _) | (_, Err(message)) => {
                        problems.add(field, message);
                        continue;
                    }
                },
            };
            conditions.push(Condition::Path(pattern, canonical));
        }
        if let Some(methods) = &config.methods {
            if methods.is_empty() {
                problems.add(format!("{path}.methods"), "must not be empty");
            }
            for (i, method) in methods.iter().enumerate() {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                    problems.add(
                        format!("{path}.methods[{i}]"),
                        "must be an upper-case method name such as GET",
                    );
                }
            }
            let methods = methods.iter().map(|m| m.as_str().into()).collect();
            conditions.push(Condition::Methods(methods));
        }
        for (key, map) in [
            ("headers", &config.headers),
            ("context_extensions", &config.context_extensions),
        ] {
            let Some(map) = map else { continue };
            if map.is_empty() {
                problems.add(format!("{path}.{key}"), "must not be empty");
            }
            for (name, value) in map {
                let test = match value {
                    ValueMatch::Exact(v) => ValueTest::Equals(v.as_str().into()),
                    ValueMatch::Present(p) => ValueTest::Present(p.present),
                };
                let name: Box<str> = name.as_str().into();
                if key == "headers" {
                    if !is_header_name(&name) {
                        problems.add(
                            format!("{path}.headers.{name}"),
                            "must be a lower-case header name",
                        );
                    }
                    conditions.push(Condition::Header(name, test));
                } else {
                    if name.is_empty() {
                        problems.add(
                            format!("{path}.context_extensions"),
                            "keys must not be empty",
                        );
                    }
                    conditions.push(Condition::ContextExtension(name, test));
                }
            }
        }
        if *config == MatchConfig::default() {
            problems.add(
                path,
                "must give at least one of host, path, path_prefix, path_glob, methods, headers, \
                 context_extensions (default_route takes every other request)",
            );
        }
        Matcher(conditions.into())
    }

    pub(super) fn matches(&self, request: &RequestView<'_>) -> bool {
        self.0.iter().all(|c| c.matches(request, false))
    }

    /// Like [`Matcher::matches`], for a request whose path is a [`canonical_path`].
    pub(super) fn matches_canonical(&self, request: &RequestView<'_>) -> bool {
        self.0.iter().all(|c| c.matches(request, true))
    }

    /// What the route index files this matcher under: its host, and the first path segment every path
    /// it takes begins with (as sent, or for a [`canonical_path`]); `None` where any value may match.
    pub(super) fn keys(&self, canonical: bool) -> (HostKey<'_>, Option<&str>) {
        let mut host = HostKey::Any;
        let mut segment = None;
        for condition in &*self.0 {
            match condition {
                Condition::Host(HostPattern::Exact(name)) => host = HostKey::Exact(name),
                Condition::Host(HostPattern::Subdomain(suffix)) => host = HostKey::Suffix(suffix),
                Condition::Path(raw, folded) => {
                    let pattern = if canonical { folded } else { raw };
                    segment = segment.or_else(|| pattern.first_segment());
                }
                _ => {}
            }
        }
        (host, segment)
    }

    /// Every condition and whether it holds, for `explain`.
    pub(super) fn explain(&self, request: &RequestView<'_>) -> Vec<ExplainStep> {
        self.0
            .iter()
            .map(|c| ExplainStep::new(c.describe(), c.matches(request, false), None))
            .collect()
    }
}

// === impl Condition ===

impl Condition {
    fn matches(&self, request: &RequestView<'_>, canonical: bool) -> bool {
        match self {
            Condition::Host(pattern) => pattern.matches(request.host),
            Condition::Path(pattern, _) if !canonical => pattern.matches(request.path),
            Condition::Path(_, pattern) => pattern.matches(request.path),
            Condition::Methods(methods) => methods.iter().any(|m| **m == *request.method),
            Condition::Header(name, test) => test.matches(request.headers.get(name)),
            Condition::ContextExtension(key, test) => test.matches(request.context_extension(key)),
        }
    }

    fn describe(&self) -> String {
        let test = |t: &ValueTest| match t {
            ValueTest::Equals(v) => format!("= {v}"),
            ValueTest::Present(true) => "present".to_owned(),
            ValueTest::Present(false) => "absent".to_owned(),
        };
        match self {
            Condition::Host(HostPattern::Exact(h)) => format!("host {h}"),
            Condition::Host(HostPattern::Subdomain(s)) => format!("host *{s}"),
            Condition::Path(PathPattern::Exact(p), _) => format!("path {p}"),
            Condition::Path(PathPattern::Prefix(p), _) => format!("path_prefix {p}"),
            Condition::Path(PathPattern::Glob(g), _) => format!("path_glob {}", g.text),
            Condition::Methods(m) => format!("methods {}", m.join("|")),
            Condition::Header(name, t) => format!("header {name} {}", test(t)),
            Condition::ContextExtension(key, t) => format!("context_extension {key} {}", test(t)),
        }
    }
}

// === impl HostPattern ===

impl HostPattern {
    fn parse(text: &str) -> Result<HostPattern, &'static str> {
        let lower = text.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(
                "must be a host name such as `api.example.com` or `*.example.com`, without port",
            );
        }
        Ok(if wildcard {
            HostPattern::Subdomain(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    /// `*.example.com` matches any name under `example.com` (as Envoy's virtual host domains do), never
    /// `example.com` itself.
    fn matches(&self, host: &str) -> bool {
        let host = without_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Subdomain(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// `example.com:8443` → `example.com`; `[::1]:80` → `[::1]`.
pub(super) fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

// === impl PathPattern ===

impl PathPattern {
    /// The first segment (between the leading `/` and the next one) of every path this pattern takes,
    /// when it is fixed: an exact path's, a prefix's when the prefix goes past it (`/api/`, not `/ap`),
    /// a glob's when it starts with a literal segment.
    fn first_segment(&self) -> Option<&str> {
        match self {
            PathPattern::Exact(p) => {
                let rest = p.strip_prefix('/')?;
                Some(rest.split('/').next().unwrap_or(""))
            }
            PathPattern::Prefix(p) => {
                let rest = p.strip_prefix('/')?;
                rest.split_once('/').map(|(first, _)| first)
            }
            PathPattern::Glob(glob) => match glob.segments.first()? {
                Segment::Literal(literal) => Some(literal),
                Segment::One | Segment::Rest => None,
            },
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            // With or without one trailing `/`.
            PathPattern::Exact(p) => {
                let trim = |s: &'_ str| -> usize {
                    s.len() - usize::from(s.len() > 1 && s.ends_with('/'))
                };
                path[..trim(path)] == p[..trim(p)]
            }
            PathPattern::Prefix(p) => path.starts_with(&**p),
            PathPattern::Glob(glob) => glob.matches(path),
        }
    }
}

/// The path an upstream may read this path as, when it differs from the path as sent (`None` when the path
/// is already canonical, the usual case, which costs no allocation): percent-encoded octets decoded, `\`
/// read as `/`, a `#` fragment cut (RFC 3986 §3.5; a decoded `%23` like `;`), `;` parameters cut from
/// each segment, ASCII case folded, `.` and `..` segments resolved, empty segments and trailing dots and
/// spaces of a segment dropped, no trailing `/`.
pub(super) fn canonical_path(path: &str) -> Option<String> {
    let odd_byte = path
        .bytes()
        .any(|b| b.is_ascii_uppercase() || matches!(b, b'%' | b';' | b'#' | b'\\' | b' ' | b'\t'));
    let odd_shape = path.contains("//")
        || path.contains("/.")
        || path.ends_with('.')
        || (path.len() > 1 && path.ends_with('/'));
    let plain = !odd_byte && !odd_shape;
    if plain {
        return None;
    }
    // The fragment as sent ends the path; a decoded `%23` ends its segment, like `;`.
    let unfragmented = path.split('#').next().unwrap_or("");
    let decoded: Vec<u8> = percent_decode(unfragmented.as_bytes());
    let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split([';', '#']).next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => {
                let s = s.trim_end_matches(['.', ' ', '\t']);
                if !s.is_empty() {
                    segments.push(s);
                }
            }
        }
    }
    let canonical = format!("/{}", segments.join("/"));
    (canonical != path).then_some(canonical)
}

/// Decodes `%XX` (RFC 3986 §2.1); a `%` not followed by two hex digits stays as it is.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

// === impl Glob ===

impl Glob {
    fn parse(text: &str) -> Result<Glob, String> {
        let parts: Vec<&str> = text[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err("`**` may only be the last segment".to_owned()),
                p if p.contains('*') => {
                    return Err(format!("`*` must be a whole segment, not part of `{p}`"))
                }
                p => Segment::Literal(p.into()),
            });
        }
        Ok(Glob {
            text: text.into(),
            segments: segments.into(),
        })
    }

    fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &*self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if parts.next() != Some(&**literal) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

// === impl ValueTest ===

impl ValueTest {
    fn matches(&self, value: Option<&str>) -> bool {
        match self {
            ValueTest::Equals(expected) => value == Some(&**expected),
            ValueTest::Present(present) => value.is_some() == *present,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::request::Headers;

    fn matcher(yaml: &str) -> Matcher {
        let config: MatchConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        let matcher = Matcher::compile(&mut problems, "match", &config);
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        matcher
    }

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let config: MatchConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        Matcher::compile(&mut problems, "routes[2].match", &config);
        problems
            .0
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    fn get(m: &Matcher, method: &str, path_and_query: &str, host: &str) -> bool {
        let view = RequestView::new(method, path_and_query, host, Headers::Pairs(&[]), "");
        m.matches(&view)
    }

    #[test]
    fn host_exact_ignores_case_and_port() {
        let m = matcher("host: api.example.com");
        assert!(get(&m, "GET", "/", "api.example.com"));
        assert!(get(&m, "GET", "/", "API.Example.com:8443"));
        assert!(get(&m, "GET", "/", "api.example.com."));
        assert!(!get(&m, "GET", "/", "api.example.com.evil.net"));
        assert!(!get(&m, "GET", "/", "x.api.example.com"));
    }

    #[test]
    fn host_wildcard_matches_subdomains_not_the_apex() {
        let m = matcher("host: '*.example.com'");
        assert!(get(&m, "GET", "/", "a.example.com"));
        assert!(get(&m, "GET", "/", "a.b.example.com:443"));
        assert!(!get(&m, "GET", "/", "example.com"));
        assert!(!get(&m, "GET", "/", ".example.com"));
        assert!(!get(&m, "GET", "/", "badexample.com"));
    }

    #[test]
    fn path_exact_never_sees_the_query() {
        let m = matcher("path: /orders");
        assert!(get(&m, "GET", "/orders", "h"));
        assert!(get(&m, "GET", "/orders?x=/admin", "h"));
        // One trailing `/` is the same resource to most upstreams, so it takes the same route.
        assert!(get(&m, "GET", "/orders/", "h"));
        assert!(!get(&m, "GET", "/orders//", "h"));
        assert!(!get(&m, "GET", "/orders/1", "h"));
    }

    #[test]
    fn path_prefix_is_a_string_prefix() {
        let m = matcher("path_prefix: /api/");
        assert!(get(&m, "GET", "/api/x", "h"));
        assert!(get(&m, "GET", "/api/", "h"));
        assert!(!get(&m, "GET", "/api", "h"));
        assert!(!get(&m, "GET", "/other?/api/", "h"));
    }

    #[test]
    fn path_glob_star_is_one_segment() {
        let m = matcher("path_glob: /tenants/*/admin");
        assert!(get(&m, "GET", "/tenants/org_1/admin", "h"));
        assert!(get(&m, "GET", "/tenants/org_1/admin?q=1", "h"));
        assert!(!get(&m, "GET", "/tenants//admin", "h"));
        assert!(!get(&m, "GET", "/tenants/a/b/admin", "h"));
        assert!(!get(&m, "GET", "/tenants/org_1/admin/x", "h"));
        assert!(!get(&m, "GET", "/tenants/org_1/admin/", "h"));
    }

    #[test]
    fn path_glob_double_star_takes_the_rest() {
        let m = matcher("path_glob: /runs/*/labels/**");
        assert!(get(&m, "GET", "/runs/7/labels", "h"));
        assert!(get(&m, "GET", "/runs/7/labels/a/b", "h"));
        assert!(!get(&m, "GET", "/runs/7/labelsx", "h"));
        assert!(!get(&m, "GET", "/runs/7", "h"));
    }

    #[test]
    fn methods_are_any_of() {
        let m = matcher("methods: [POST, PUT]");
        assert!(get(&m, "POST", "/", "h"));
        assert!(get(&m, "PUT", "/", "h"));
        assert!(!get(&m, "GET", "/", "h"));
        assert!(!get(&m, "post", "/", "h"));
    }

    #[test]
    fn headers_match_exact_value_or_presence() {
        let m =
            matcher("headers: {x-env: prod, x-debug: {present: false}, x-trace: {present: true}}");
        let check = |pairs: &[(&str, &str)]| {
            m.matches(&RequestView::new(
                "GET",
                "/",
                "h",
                Headers::Pairs(pairs),
                "",
            ))
        };
        assert!(check(&[("x-env", "prod"), ("x-trace", "1")]));
        assert!(!check(&[("x-env", "production"), ("x-trace", "1")]));
        assert!(!check(&[("x-trace", "1")]));
        assert!(!check(&[("x-env", "prod")]));
        assert!(!check(&[
            ("x-env", "prod"),
            ("x-trace", "1"),
            ("x-debug", "")
        ]));
    }

    #[test]
    fn context_extensions_route_requests() {
        let m = matcher("context_extensions: {service: billing}");
        let billing = HashMap::from([("service".to_owned(), "billing".to_owned())]);
        let other = HashMap::from([("service".to_owned(), "orders".to_owned())]);
        let view = RequestView::new("GET", "/", "h", Headers::Pairs(&[]), "");
        assert!(m.matches(&view.with_context_extensions(&billing)));
        assert!(!m.matches(&view.with_context_extensions(&other)));
        assert!(!m.matches(&view));
    }

    #[test]
    fn all_conditions_must_hold() {
        let m = matcher("{host: api.example.com, path_prefix: /admin/, methods: [DELETE]}");
        assert!(get(&m, "DELETE", "/admin/x", "api.example.com"));
        assert!(!get(&m, "GET", "/admin/x", "api.example.com"));
        assert!(!get(&m, "DELETE", "/admin/x", "www.example.com"));
        assert!(!get(&m, "DELETE", "/public", "api.example.com"));
    }

    #[test]
    fn bad_matches_are_reported_with_paths() {
        let found = problems(
            "{host: 'a.*.com', path: /a, path_glob: '/a/b*', methods: [get], headers: {X-Env: prod}}",
        );
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[2].match.host",
                "routes[2].match",
                "routes[2].match.path_glob",
                "routes[2].match.methods[0]",
                "routes[2].match.headers.X-Env",
            ]
        );
        assert_eq!(
            found[1].1,
            "give at most one of path, path_prefix, path_glob"
        );
        assert_eq!(found[2].1, "`*` must be a whole segment, not part of `b*`");
    }

    #[test]
    fn empty_and_malformed_matches_are_refused() {
        assert_eq!(problems("{}")[0].0, "routes[2].match");
        assert_eq!(
            problems("{methods: []}"),
            [(
                "routes[2].match.methods".to_owned(),
                "must not be empty".to_owned()
            )]
        );
        assert_eq!(
            problems("{path_glob: '/a/**/b'}")[0].1,
            "`**` may only be the last segment"
        );
        assert_eq!(
            problems("{path_prefix: 'api'}")[0].0,
            "routes[2].match.path_prefix"
        );
        assert_eq!(problems("{path: '/a?b=1'}")[0].0, "routes[2].match.path");
        assert_eq!(problems("{headers: {}}")[0].0, "routes[2].match.headers");
        assert_eq!(
            problems("{host: 'api.example.com:443'}")[0].0,
            "routes[2].match.host"
        );
    }
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical_path;

    #[test]
    fn near_variants_fold_to_one_path() {
        for variant in [
            "/Admin",
            "/admin/",
            "/admin;x",
            "/admin%3Bx",
            "/admin.",
            "/admin%20",
            "//admin",
            "/a/../admin",
            "/./admin",
            "/%61dmin",
            "/admin\\",
            "/admin;a/",
            "/admin#x",
            "/admin#",
            "/admin%23x",
            "/admin%23",
            "/admin/#/x",
        ] {
            assert_eq!(
                canonical_path(variant).as_deref(),
                Some("/admin"),
                "{variant}"
            );
        }
        assert_eq!(canonical_path("/admin"), None);
        assert_eq!(canonical_path("/"), None);
        assert_eq!(canonical_path("/a/b-c_d~e"), None);
        assert_eq!(canonical_path("/../.."), Some("/".to_owned()));
        // A `%` without two hex digits stays; nothing else changes, so the path is its own canonical form.
        assert_eq!(canonical_path("/a%zz"), None);
    }
}
