//! A configuration in fragments (`--config DIR`): several YAML documents, each a file the host read, merged
//! into one configuration so that teams own their routes (a Kubernetes pod mounts several ConfigMaps in
//! one directory).
//!
//! - `providers` and `routes` concatenate, in the order of the fragments (the host gives them in name
//!   order) and within each fragment in its own order: route order is first-match order across fragments.
//! - Every other top-level key (`server`, `mode`, `default_route`, `headers`, …) may appear in one fragment
//!   only; a second one is an error naming both files.
//! - A provider name, a jwt issuer, a route name or an identical route match (same host, same path
//!   condition, same set of methods) claimed by two fragments is an error naming both files and both field
//!   paths. Within one fragment, the single-file checks say what they always say.
//! - Every problem names its fragment and the field path inside it, `20-team-b.yaml: routes[1].name: …`,
//!   with `providers[i]` and `routes[i]` counted inside that fragment ([`Origins::locate`]).
//!
//! What conflicts is reported and left out of the merge, so that the rest is still checked as one
//! configuration without echoing the conflict as a second problem.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;

use serde_yaml_ng::{Mapping, Value};

use super::{Config, ConfigErrors, Parsed, Problem, Problems, TOP_LEVEL_KEYS};

/// One fragment of a configuration: its file name (no directory) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub name: String,
    pub text: String,
}

/// What a configuration is read from: one file's text, or fragments in name order.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A single file (`--config FILE`): problems carry the field path only, as always.
    File(&'a str),
    /// A directory's fragments (`--config DIR`), in the order they are merged.
    Fragments(&'a [Fragment]),
}

impl<'a> From<&'a str> for Source<'a> {
    fn from(text: &'a str) -> Self {
        Source::File(text)
    }
}

impl<'a> From<&'a String> for Source<'a> {
    fn from(text: &'a String) -> Self {
        Source::File(text)
    }
}

impl<'a> From<&'a [Fragment]> for Source<'a> {
    fn from(fragments: &'a [Fragment]) -> Self {
        Source::Fragments(fragments)
    }
}

impl<'a> From<&'a Vec<Fragment>> for Source<'a> {
    fn from(fragments: &'a Vec<Fragment>) -> Self {
        Source::Fragments(fragments)
    }
}

/// Where each part of a merged configuration came from. The default (a single file) leaves every path as
/// it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// The fragments' file names, in merge order.
    files: Vec<String>,
    /// For each provider of the merged document: its fragment and its index in that fragment's list.
    providers: Vec<(usize, usize)>,
    /// The same for each route.
    routes: Vec<(usize, usize)>,
    /// The fragment that holds each other top-level key.
    sections: Vec<(String, usize)>,
}

// === impl Origins ===

impl Origins {
    /// `problem` (at a path of the merged document) at the path inside its fragment, prefixed with the
    /// fragment's file name: `providers[3].issuer` → `20-team-b.yaml: providers[0].issuer`. A path that
    /// belongs to no fragment (a required section none of them has) stays as it is.
    pub fn locate(&self, problem: Problem) -> Problem {
        if self.files.is_empty() {
            return problem;
        }
        let listed = |list: &str, origins: &[(usize, usize)]| {
            let rest = problem.path.strip_prefix(list)?.strip_prefix('[')?;
            let (i, rest) = rest.split_once(']')?;
            let &(file, index) = origins.get(i.parse::<usize>().ok()?)?;
            Some((file, format!("{list}[{index}]{rest}")))
        };
        let key = problem.path.split(['.', '[']).next().unwrap_or_default();
        let found = listed("providers", &self.providers)
            .or_else(|| listed("routes", &self.routes))
            .or_else(|| {
                let (_, file) = self.sections.iter().find(|(k, _)| k == key)?;
                Some((*file, problem.path.clone()))
            });
        match found {
            Some((file, path)) => Problem {
                path: self.at(file, &path),
                message: problem.message,
            },
            None => problem,
        }
    }

    fn at(&self, file: usize, path: &str) -> String {
        at(&self.files[file], path)
    }
}

fn at(file: &str, path: &str) -> String {
    format!("{file}: {path}")
}

/// A route's match as far as two fragments may not share it: the host (case-insensitive), the path
/// condition and the set of methods.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MatchKey {
    host: Option<String>,
    path: Option<(&'static str, String)>,
    methods: Option<Vec<String>>,
}

fn match_key(route: &Value) -> Option<MatchKey> {
    let matches = route.get("match")?.as_mapping()?;
    let text = |key: &str| matches.get(key).and_then(Value::as_str).map(str::to_owned);
    let path = ["path", "path_prefix", "path_glob"]
        .into_iter()
        .find_map(|kind| Some((kind, text(kind)?)));
    let methods = match matches.get("methods") {
        None | Some(Value::Null) => None,
        Some(Value::Sequence(items)) => {
            let mut methods: Vec<String> = items
                .iter()
                .map(|m| m.as_str().map(str::to_owned))
                .collect::<Option<_>>()?;
            methods.sort();
            methods.dedup();
            Some(methods)
        }
        Some(_) => return None,
    };
    Some(MatchKey {
        host: text("host").map(|h| h.to_ascii_lowercase()),
        path,
        methods,
    })
}

/// A list section of one fragment: its items, or a problem when it is not a list.
fn items(problems: &mut Problems, file: &str, key: &str, value: Value) -> Vec<Value> {
    match value {
        Value::Sequence(items) => items,
        Value::Null => Vec::new(),
        _ => {
            problems.add(at(file, key), "must be a list");
            Vec::new()
        }
    }
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// What each fragment claimed first: a key → (fragment, index in its list). Hash maps, so that a
/// directory of 100,000 routes merges in linear time.
struct Claims<K>(HashMap<K, (usize, usize)>);

// === impl Claims ===

impl<K: Hash + Eq> Claims<K> {
    fn new() -> Self {
        Claims(HashMap::new())
    }

    /// The first claimant of `key` when it is in another fragment than `fragment` (a duplicate within
    /// one fragment is the single-file checks' to report); otherwise `key` is claimed, if not yet.
    fn claim(&mut self, key: K, fragment: usize, index: usize) -> Option<(usize, usize)> {
        match self.0.entry(key) {
            Entry::Occupied(first) if first.get().0 != fragment => Some(*first.get()),
            Entry::Occupied(_) => None,
            Entry::Vacant(slot) => {
                slot.insert((fragment, index));
                None
            }
        }
    }
}

/// Fragments merged so far: the merged document, where each part came from, what was claimed.
struct Merge<'a> {
    fragments: &'a [Fragment],
    problems: Problems,
    origins: Origins,
    merged: Mapping,
    providers: Vec<Value>,
    routes: Vec<Value>,
    provider_names: Claims<String>,
    issuers: Claims<String>,
    route_names: Claims<String>,
    route_matches: Claims<MatchKey>,
}

// === impl Merge ===

impl<'a> Merge<'a> {
    fn new(fragments: &'a [Fragment]) -> Self {
        Merge {
            fragments,
            problems: Problems::default(),
            origins: Origins {
                files: fragments.iter().map(|f| f.name.clone()).collect(),
                ..Origins::default()
            },
            merged: Mapping::new(),
            providers: Vec::new(),
            routes: Vec::new(),
            provider_names: Claims::new(),
            issuers: Claims::new(),
            route_names: Claims::new(),
            route_matches: Claims::new(),
        }
    }

    /// One fragment's document, read as YAML; false when it has nothing to merge.
    fn fragment(&mut self, f: usize) -> bool {
        let file = self.fragments[f].name.as_str();
        let map = match serde_yaml_ng::from_str::<Value>(&self.fragments[f].text) {
            Ok(Value::Mapping(map)) => map,
            Ok(Value::Null) => {
                self.problems.add(
                    at(file, "."),
                    "the fragment is empty: give it a section or remove the file",
                );
                return false;
            }
            Ok(_) => {
                self.problems
                    .add(at(file, "."), "must be a mapping of sections");
                return false;
            }
            Err(e) => {
                self.problems
                    .add(at(file, "."), format!("not valid YAML: {e}"));
                return false;
            }
        };
        for (key, value) in map {
            let Some(key) = key.as_str().map(str::to_owned) else {
                self.problems
                    .add(at(file, "."), "section names must be strings");
                continue;
            };
            match key.as_str() {
                "providers" => {
                    for (i, item) in items(&mut self.problems, file, &key, value)
                        .into_iter()
                        .enumerate()
                    {
                        self.provider(f, i, item);
                    }
                }
                "routes" => {
                    for (i, item) in items(&mut self.problems, file, &key, value)
                        .into_iter()
                        .enumerate()
                    {
                        self.route(f, i, item);
                    }
                }
                _ if !TOP_LEVEL_KEYS.contains(&key.as_str()) => self.problems.add(
                    at(file, &key),
                    format!(
                        "unknown field, expected one of {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ),
                _ => self.section(f, key, value),
            }
        }
        true
    }

    fn provider(&mut self, f: usize, i: usize, item: Value) {
        let (file, fragments) = (self.fragments[f].name.as_str(), self.fragments);
        if let Some(name) = name_of(&item) {
            if let Some((g, j)) = self.provider_names.claim(name.to_owned(), f, i) {
                self.problems.add(
                    at(file, &format!("providers[{i}].name")),
                    format!(
                        "provider `{name}` is also declared in {}: providers[{j}]; a provider name may be claimed by one fragment only",
                        fragments[g].name
                    ),
                );
                return;
            }
        }
        let jwt = item.get("type").and_then(Value::as_str) == Some("jwt");
        if let Some(issuer) = item.get("issuer").and_then(Value::as_str).filter(|_| jwt) {
            if let Some((g, j)) = self.issuers.claim(issuer.to_owned(), f, i) {
                self.problems.add(
                    at(file, &format!("providers[{i}].issuer")),
                    format!(
                        "the issuer `{issuer}` is also the issuer of {}: providers[{j}]; the token's `iss` must pick exactly one provider",
                        fragments[g].name
                    ),
                );
                return;
            }
        }
        self.origins.providers.push((f, i));
        self.providers.push(item);
    }

    fn route(&mut self, f: usize, i: usize, item: Value) {
        let (file, fragments) = (self.fragments[f].name.as_str(), self.fragments);
        let mut conflict = false;
        if let Some(name) = name_of(&item) {
            if let Some((g, j)) = self.route_names.claim(name.to_owned(), f, i) {
                self.problems.add(
                    at(file, &format!("routes[{i}].name")),
                    format!(
                        "route `{name}` is also named in {}: routes[{j}].name; a route name may be claimed by one fragment only",
                        fragments[g].name
                    ),
                );
                conflict = true;
            }
        }
        if let Some(key) = match_key(&item) {
            if let Some((g, j)) = self.route_matches.claim(key, f, i) {
                self.problems.add(
                    at(file, &format!("routes[{i}].match")),
                    format!(
                        "the same match (host, path, methods) as {}: routes[{j}].match; the first would take every request of this route, so two fragments may not claim it",
                        fragments[g].name
                    ),
                );
                conflict = true;
            }
        }
        if !conflict {
            self.origins.routes.push((f, i));
            self.routes.push(item);
        }
    }

    fn section(&mut self, f: usize, key: String, value: Value) {
        let file = self.fragments[f].name.as_str();
        if let Some((_, g)) = self.origins.sections.iter().find(|(k, _)| *k == key) {
            self.problems.add(
                at(file, &key),
                format!(
                    "is also in {}: every section but providers and routes may appear in one fragment only",
                    self.fragments[*g].name
                ),
            );
            return;
        }
        self.origins.sections.push((key.clone(), f));
        self.merged.insert(Value::String(key), value);
    }
}

// === impl Config (fragments) ===

impl Config {
    /// Parses and validates a configuration in fragments ([`Source::Fragments`]): see the module docs.
    /// Every problem names its fragment; [`Parsed::in_document`] does the same for what is found later.
    pub fn parse_fragments(fragments: &[Fragment]) -> Result<Parsed, ConfigErrors> {
        if fragments.is_empty() {
            return Err(ConfigErrors(vec![Problem {
                path: ".".to_owned(),
                message: "no fragments: a configuration directory needs at least one `*.yaml` file"
                    .to_owned(),
            }]));
        }
        let mut merge = Merge::new(fragments);
        let mut any_parsed = false;
        for f in 0..fragments.len() {
            any_parsed |= merge.fragment(f);
        }
        let Merge {
            mut problems,
            origins,
            mut merged,
            providers,
            routes,
            ..
        } = merge;
        if !any_parsed {
            return Err(ConfigErrors(problems.0));
        }
        if !providers.is_empty() {
            merged.insert("providers".into(), Value::Sequence(providers));
        }
        if !routes.is_empty() {
            merged.insert("routes".into(), Value::Sequence(routes));
        }
        let mut parsed = match Config::parse_value(Value::Mapping(merged)) {
            Ok(parsed) => parsed,
            Err(ConfigErrors(found)) => {
                problems
                    .0
                    .extend(found.into_iter().map(|p| origins.locate(p)));
                return Err(ConfigErrors(problems.0));
            }
        };
        let found = std::mem::take(&mut parsed.problems);
        problems
            .0
            .extend(found.into_iter().map(|p| origins.locate(p)));
        parsed.problems = problems.0;
        parsed.origins = origins;
        Ok(parsed)
    }

    /// Parses either source ([`Config::parse`] or [`Config::parse_fragments`]).
    pub fn parse_source(source: Source<'_>) -> Result<Parsed, ConfigErrors> {
        match source {
            Source::File(text) => Config::parse(text),
            Source::Fragments(fragments) => Config::parse_fragments(fragments),
        }
    }

    /// [`Config::from_yaml_str`] for either source.
    pub fn from_source(source: Source<'_>) -> Result<Config, ConfigErrors> {
        let parsed = Config::parse_source(source)?;
        if parsed.problems.is_empty() {
            Ok(parsed.config)
        } else {
            Err(ConfigErrors(parsed.problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragments(list: &[(&str, &str)]) -> Vec<Fragment> {
        list.iter()
            .map(|(name, text)| Fragment {
                name: (*name).to_owned(),
                text: (*text).to_owned(),
            })
            .collect()
    }

    fn problems(list: &[(&str, &str)]) -> Vec<String> {
        match Config::parse_fragments(&fragments(list)) {
            Ok(parsed) => parsed.problems.iter().map(ToString::to_string).collect(),
            Err(ConfigErrors(found)) => found.iter().map(ToString::to_string).collect(),
        }
    }

    const BASE: &str = "
mode: enforce
providers:
  - {name: anon, type: anonymous}
routes:
  - {name: open, match: {path_prefix: /open}, allow_anonymous: true}
";
    const TEAM: &str = "
providers:
  - name: team
    type: jwt
    issuer: https://team.example.com/
    audiences: [api]
routes:
  - {name: team-read, match: {host: team.example.com, path_prefix: /read, methods: [GET]}}
  - {name: team-all, match: {host: team.example.com}, providers: [team, anon]}
";

    #[test]
    fn providers_and_routes_concatenate_in_fragment_order() {
        let parsed = Config::parse_fragments(&fragments(&[
            ("00-base.yaml", BASE),
            ("10-team.yaml", TEAM),
        ]))
        .unwrap();
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let config = parsed.config;
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["anon", "team"]);
        let routes: Vec<&str> = config
            .policy
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(routes, ["open", "team-read", "team-all"]);
        assert_eq!(config.policy.mode, crate::config::Mode::Enforce);
    }

    #[test]
    fn a_problem_names_its_fragment_and_the_path_inside_it() {
        let bad_team = TEAM.replace("audiences: [api]", "audiences: []");
        let found = problems(&[
            ("00-base.yaml", BASE),
            ("10-team.yaml", &bad_team),
            (
                "20-other.yaml",
                "routes:\n  - {name: x, match: {path_prefix: /x}, bogus: 1}\nrealm: 'a\"b'\n",
            ),
        ]);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("10-team.yaml: providers[0].audiences: ")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("20-other.yaml: routes[0].bogus: unknown field")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("20-other.yaml: realm: ")),
            "{found:?}"
        );
        // Found when the policy is compiled, after parsing: named the same way.
        let unknown_provider = TEAM.replace("providers: [team, anon]", "providers: [nobody]");
        let parsed = Config::parse_fragments(&fragments(&[
            ("00-base.yaml", BASE),
            ("10-team.yaml", &unknown_provider),
        ]))
        .unwrap();
        assert!(parsed.problems.is_empty());
        let located = parsed.in_document(Problem {
            path: "routes[2].providers[0]".to_owned(),
            message: "unknown provider".to_owned(),
        });
        assert_eq!(located.path, "10-team.yaml: routes[1].providers[0]");
        let located = parsed.in_document(Problem {
            path: "providers[1].jwks".to_owned(),
            message: "m".to_owned(),
        });
        assert_eq!(located.path, "10-team.yaml: providers[0].jwks");
        let located = parsed.in_document(Problem {
            path: "mode".to_owned(),
            message: "m".to_owned(),
        });
        assert_eq!(located.path, "00-base.yaml: mode");
    }

    #[test]
    fn a_section_in_two_fragments_names_both_files() {
        let found = problems(&[
            ("00-base.yaml", BASE),
            ("10-team.yaml", &format!("{TEAM}mode: permissive\n")),
        ]);
        assert_eq!(
            found,
            ["10-team.yaml: mode: is also in 00-base.yaml: every section but providers and routes may appear in one fragment only"]
        );
    }

    #[test]
    fn a_provider_or_issuer_claimed_by_two_fragments_names_both_files() {
        let again = "
providers:
  - {name: anon, type: anonymous}
  - name: other
    type: jwt
    issuer: https://team.example.com/
    audiences: [api]
";
        let found = problems(&[
            ("00-base.yaml", BASE),
            ("10-team.yaml", TEAM),
            ("20-again.yaml", again),
        ]);
        assert_eq!(
            found,
            [
                "20-again.yaml: providers[0].name: provider `anon` is also declared in 00-base.yaml: providers[0]; a provider name may be claimed by one fragment only",
                "20-again.yaml: providers[1].issuer: the issuer `https://team.example.com/` is also the issuer of 10-team.yaml: providers[0]; the token's `iss` must pick exactly one provider",
            ]
        );
    }

    #[test]
    fn a_route_name_or_match_claimed_by_two_fragments_names_both_files_and_paths() {
        let other = "
routes:
  - {name: mine, match: {path_prefix: /mine}, allow_anonymous: true}
  - {name: team-read, match: {path_prefix: /elsewhere}, allow_anonymous: true}
  - {name: copy, match: {host: TEAM.example.com, methods: [GET, GET], path_prefix: /read}, allow_anonymous: true}
  - {name: post, match: {host: team.example.com, methods: [POST], path_prefix: /read}, allow_anonymous: true}
";
        let found = problems(&[
            ("00-base.yaml", BASE),
            ("10-team.yaml", TEAM),
            ("20-other.yaml", other),
        ]);
        assert_eq!(
            found,
            [
                "20-other.yaml: routes[1].name: route `team-read` is also named in 10-team.yaml: routes[0].name; a route name may be claimed by one fragment only",
                "20-other.yaml: routes[2].match: the same match (host, path, methods) as 10-team.yaml: routes[0].match; the first would take every request of this route, so two fragments may not claim it",
            ]
        );
        // Within one fragment, the single-file check speaks, at the path inside the fragment.
        let twice = "
routes:
  - {name: dup, match: {path_prefix: /a}, allow_anonymous: true}
  - {name: dup, match: {path_prefix: /b}, allow_anonymous: true}
";
        let parsed = Config::parse_fragments(&fragments(&[
            ("00-base.yaml", BASE),
            ("10-twice.yaml", twice),
        ]))
        .unwrap();
        assert!(parsed.problems.is_empty());
        let runtime_problems = crate::runtime::load(
            Source::Fragments(&fragments(&[
                ("00-base.yaml", BASE),
                ("10-twice.yaml", twice),
            ])),
            None,
        )
        .unwrap_err();
        assert_eq!(
            runtime_problems.0[0].to_string(),
            "10-twice.yaml: routes[1].name: another route is also named `dup`"
        );
    }

    #[test]
    fn empty_broken_and_missing_fragments_are_refused_with_their_names() {
        assert_eq!(
            problems(&[]),
            [".: no fragments: a configuration directory needs at least one `*.yaml` file"]
        );
        let found = problems(&[
            ("00-base.yaml", BASE),
            ("10-empty.yaml", ""),
            ("20-bad.yaml", "routes: [\n"),
        ]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            "10-empty.yaml: .: the fragment is empty: give it a section or remove the file"
        );
        assert!(
            found[1].starts_with("20-bad.yaml: .: not valid YAML: "),
            "{found:?}"
        );
        let found = problems(&[("00-routes.yaml", "routes: {name: x}\nsurprise: 1\n")]);
        assert_eq!(
            found[..2],
            [
                "00-routes.yaml: routes: must be a list".to_owned(),
                format!(
                    "00-routes.yaml: surprise: unknown field, expected one of {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ]
        );
        // No fragment has providers: said without a file.
        assert!(
            found.contains(&"providers: is required: list at least one provider".to_owned()),
            "{found:?}"
        );
    }

    #[test]
    fn a_single_file_source_is_parsed_as_before() {
        let file = Config::parse_source(Source::File(BASE)).unwrap();
        let one = Config::parse_fragments(&fragments(&[("only.yaml", BASE)])).unwrap();
        assert_eq!(file.config, one.config);
        let problem = Problem {
            path: "routes[0].name".to_owned(),
            message: "m".to_owned(),
        };
        assert_eq!(file.in_document(problem.clone()), problem);
        assert_eq!(one.in_document(problem).path, "only.yaml: routes[0].name");
    }
}
