//! Reading claims by name: plain names, paths into nested objects, and Auth0 namespaced custom claims
//! under `claims_namespace` and its aliases, so a namespace rename is non-breaking. The candidate keys are
//! built once; a lookup only reads the token's claim map.

use serde_json::{Map, Value as Json};

use crate::config::policy::{ClaimConfig, ClaimName, PolicyConfig};
use crate::config::Problems;

/// `claims_namespace` followed by its aliases, in the order they are read.
#[derive(Debug, Default)]
pub(super) struct Namespaces(Box<[Box<str>]>);

impl Namespaces {
    pub(super) fn compile(problems: &mut Problems, config: &PolicyConfig) -> Namespaces {
        let mut all: Vec<Box<str>> = Vec::new();
        if let Some(ns) = &config.claims_namespace {
            check_namespace(problems, "claims_namespace", ns);
            all.push(ns.as_str().into());
        } else if !config.claims_namespace_aliases.is_empty() {
            problems.add(
                "claims_namespace_aliases",
                "needs claims_namespace: aliases are older names of the namespace",
            );
        }
        for (i, alias) in config.claims_namespace_aliases.iter().enumerate() {
            let path = format!("claims_namespace_aliases[{i}]");
            check_namespace(problems, &path, alias);
            if all.iter().any(|n| **n == **alias) {
                problems.add(path, "repeats an earlier namespace");
            }
            all.push(alias.as_str().into());
        }
        Namespaces(all.into())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name` under each namespace, in reading order.
    pub(super) fn keys(&self, name: &str) -> impl Iterator<Item = Box<str>> + '_ {
        let name = name.to_owned();
        self.0.iter().map(move |ns| format!("{ns}{name}").into())
    }
}

fn check_namespace(problems: &mut Problems, path: &str, ns: &str) {
    if ns.is_empty() || ns.chars().any(char::is_whitespace) || !ns.ends_with(['/', ':']) {
        problems.add(
            path,
            "must be a URL or URN ending with `/` or `:`, e.g. `https://example.com/` (claim names are appended to it)",
        );
    }
}

/// Where a claim is read: the first of `keys` present at the top level, then `rest` into nested objects.
#[derive(Debug)]
pub(super) struct ClaimPath {
    keys: Box<[Box<str>]>,
    rest: Box<[Box<str>]>,
}

impl ClaimPath {
    /// `name` read plainly first, then under each namespace (how `org_id` is found).
    pub(super) fn plain_then_namespaced(name: &str, namespaces: &Namespaces) -> ClaimPath {
        let mut keys = vec![name.into()];
        keys.extend(namespaces.keys(name));
        ClaimPath::with_keys(keys, &[])
    }

    fn with_keys(keys: Vec<Box<str>>, rest: &[String]) -> ClaimPath {
        ClaimPath {
            keys: keys.into(),
            rest: rest.iter().map(|s| s.as_str().into()).collect(),
        }
    }

    /// The claim's value; `null` counts as absent.
    pub(super) fn lookup<'c>(&self, claims: &'c Map<String, Json>) -> Option<&'c Json> {
        let first = self.keys.iter().find_map(|k| claims.get(&**k))?;
        self.rest
            .iter()
            .try_fold(first, |value, name| value.as_object()?.get(&**name))
            .filter(|v| !v.is_null())
    }

    /// The claim as read first (under the main namespace), e.g. `https://example.com/roles` or `a > b`.
    pub(super) fn describe(&self) -> String {
        let mut text = self.keys[0].to_string();
        for name in &*self.rest {
            text.push_str(" > ");
            text.push_str(name);
        }
        text
    }
}

/// What a claim must be.
#[derive(Debug, PartialEq)]
enum ClaimTest {
    Equals(Json),
    OneOf(Box<[Json]>),
    Contains(Json),
    Prefix(Box<str>),
    Exists,
    Absent,
}

/// One compiled `claims` entry.
#[derive(Debug)]
pub(super) struct ClaimRule {
    path: ClaimPath,
    test: ClaimTest,
}

impl ClaimRule {
    pub(super) fn compile(
        problems: &mut Problems,
        path: &str,
        config: &ClaimConfig,
        namespaces: &Namespaces,
    ) -> Option<ClaimRule> {
        let names: &[String] = match &config.claim {
            ClaimName::Name(name) => std::slice::from_ref(name),
            ClaimName::Path(names) => names,
        };
        let mut ok = true;
        if names.is_empty() || names.iter().any(String::is_empty) {
            problems.add(
                format!("{path}.claim"),
                "must name a claim: a non-empty name or path of names",
            );
            ok = false;
        }
        if config.namespaced && namespaces.is_empty() {
            problems.add(format!("{path}.namespaced"), "needs claims_namespace");
            ok = false;
        }
        let test = ClaimTest::compile(problems, path, config);
        let (first, rest) = names.split_first()?;
        let keys = if config.namespaced {
            namespaces.keys(first).collect()
        } else {
            vec![first.as_str().into()]
        };
        Some(ClaimRule {
            path: ClaimPath::with_keys(keys, rest),
            test: test.filter(|_| ok)?,
        })
    }

    pub(super) fn holds(&self, claims: &Map<String, Json>) -> bool {
        self.test.holds(self.path.lookup(claims))
    }

    pub(super) fn describe(&self) -> String {
        let claim = self.path.describe();
        match &self.test {
            ClaimTest::Equals(v) => format!("claim {claim} equals {v}"),
            ClaimTest::OneOf(vs) => format!("claim {claim} one of {}", Json::from(vs.to_vec())),
            ClaimTest::Contains(v) => format!("claim {claim} contains {v}"),
            ClaimTest::Prefix(p) => format!("claim {claim} starts with {p:?}"),
            ClaimTest::Exists => format!("claim {claim} exists"),
            ClaimTest::Absent => format!("claim {claim} absent"),
        }
    }
}

impl ClaimTest {
    fn compile(problems: &mut Problems, path: &str, config: &ClaimConfig) -> Option<ClaimTest> {
        let mut tests = Vec::new();
        let scalar = |problems: &mut Problems, field: &str, v: &Json| {
            let ok = matches!(v, Json::String(_) | Json::Number(_) | Json::Bool(_));
            if !ok {
                problems.add(
                    format!("{path}.{field}"),
                    "must be a string, number or boolean",
                );
            }
            ok
        };
        if let Some(v) = &config.equals {
            scalar(problems, "equals", v).then(|| tests.push(ClaimTest::Equals(v.clone())));
        }
        if let Some(vs) = &config.one_of {
            if vs.is_empty() {
                problems.add(format!("{path}.one_of"), "must not be empty");
            } else if vs.iter().all(|v| scalar(problems, "one_of", v)) {
                tests.push(ClaimTest::OneOf(vs.clone().into()));
            }
        }
        if let Some(v) = &config.contains {
            scalar(problems, "contains", v).then(|| tests.push(ClaimTest::Contains(v.clone())));
        }
        if let Some(p) = &config.prefix {
            if p.is_empty() {
                problems.add(format!("{path}.prefix"), "must not be empty");
            } else {
                tests.push(ClaimTest::Prefix(p.as_str().into()));
            }
        }
        for (field, flag, test) in [
            ("exists", config.exists, ClaimTest::Exists),
            ("absent", config.absent, ClaimTest::Absent),
        ] {
            match flag {
                Some(true) => tests.push(test),
                Some(false) => problems.add(
                    format!("{path}.{field}"),
                    "may only be `true` (use the other of exists/absent)",
                ),
                None => {}
            }
        }
        let given = [
            config.equals.is_some(),
            config.one_of.is_some(),
            config.contains.is_some(),
            config.prefix.is_some(),
            config.exists.is_some(),
            config.absent.is_some(),
        ]
        .into_iter()
        .filter(|g| *g)
        .count();
        if given != 1 {
            problems.add(
                path,
                "give exactly one of equals, one_of, contains, prefix, exists, absent",
            );
            return None;
        }
        tests.pop()
    }

    fn holds(&self, value: Option<&Json>) -> bool {
        match (self, value) {
            (ClaimTest::Absent, value) => value.is_none(),
            (_, None) => false,
            (ClaimTest::Exists, Some(_)) => true,
            (ClaimTest::Equals(expected), Some(v)) => v == expected,
            (ClaimTest::OneOf(options), Some(v)) => options.contains(v),
            (ClaimTest::Contains(item), Some(v)) => {
                v.as_array().is_some_and(|items| items.contains(item))
            }
            (ClaimTest::Prefix(prefix), Some(v)) => {
                v.as_str().is_some_and(|s| s.starts_with(&**prefix))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn namespaces(yaml: &str) -> Namespaces {
        let config: PolicyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        let ns = Namespaces::compile(&mut problems, &config);
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        ns
    }

    const NS: &str = "{claims_namespace: 'https://example.com/', claims_namespace_aliases: ['https://old.example.com/']}";

    fn rule(yaml: &str, ns: &Namespaces) -> ClaimRule {
        let config: ClaimConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        let rule = ClaimRule::compile(&mut problems, "claims[0]", &config, ns);
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        rule.unwrap()
    }

    fn holds(yaml: &str, claims: Json) -> bool {
        let ns = namespaces(NS);
        rule(yaml, &ns).holds(claims.as_object().unwrap())
    }

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let config: ClaimConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        ClaimRule::compile(&mut problems, "claims[0]", &config, &Namespaces::default());
        problems
            .0
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn equals_compares_json_values_exactly() {
        assert!(holds(
            "{claim: tier, equals: gold}",
            json!({"tier": "gold"})
        ));
        assert!(!holds(
            "{claim: tier, equals: gold}",
            json!({"tier": "Gold"})
        ));
        assert!(!holds(
            "{claim: tier, equals: gold}",
            json!({"tier": ["gold"]})
        ));
        assert!(holds("{claim: level, equals: 3}", json!({"level": 3})));
        assert!(!holds("{claim: level, equals: 3}", json!({"level": "3"})));
        assert!(holds(
            "{claim: email_verified, equals: true}",
            json!({"email_verified": true})
        ));
        assert!(!holds("{claim: tier, equals: gold}", json!({})));
    }

    #[test]
    fn one_of_contains_prefix() {
        assert!(holds(
            "{claim: tier, one_of: [gold, silver]}",
            json!({"tier": "silver"})
        ));
        assert!(!holds(
            "{claim: tier, one_of: [gold, silver]}",
            json!({"tier": "bronze"})
        ));
        assert!(holds(
            "{claim: roles, contains: admin}",
            json!({"roles": ["user", "admin"]})
        ));
        assert!(!holds(
            "{claim: roles, contains: admin}",
            json!({"roles": ["administrator"]})
        ));
        assert!(!holds(
            "{claim: roles, contains: admin}",
            json!({"roles": "admin"})
        ));
        assert!(holds(
            "{claim: email, prefix: 'ops-'}",
            json!({"email": "ops-1@example.com"})
        ));
        assert!(!holds(
            "{claim: email, prefix: 'ops-'}",
            json!({"email": "dev@example.com"})
        ));
        assert!(!holds(
            "{claim: email, prefix: 'ops-'}",
            json!({"email": 7})
        ));
    }

    #[test]
    fn exists_and_absent_treat_null_as_absent() {
        assert!(holds(
            "{claim: act, exists: true}",
            json!({"act": {"sub": "agent"}})
        ));
        assert!(!holds("{claim: act, exists: true}", json!({"act": null})));
        assert!(holds("{claim: act, absent: true}", json!({"act": null})));
        assert!(holds("{claim: act, absent: true}", json!({})));
        assert!(!holds("{claim: act, absent: true}", json!({"act": "x"})));
    }

    #[test]
    fn nested_claims_by_path() {
        let claims = json!({"address": {"country": "DE"}, "a.b": "literal"});
        assert!(holds(
            "{claim: [address, country], equals: DE}",
            claims.clone()
        ));
        assert!(!holds(
            "{claim: [address, region], exists: true}",
            claims.clone()
        ));
        assert!(!holds("{claim: [a, b], exists: true}", claims.clone()));
        // A name is literal: dots are not path separators.
        assert!(holds("{claim: a.b, equals: literal}", claims.clone()));
        assert!(!holds(
            "{claim: [address, country, x], exists: true}",
            claims
        ));
    }

    #[test]
    fn url_named_claims_are_addressable() {
        let claims = json!({"https://example.com/roles": ["admin"]});
        assert!(holds(
            "{claim: 'https://example.com/roles', contains: admin}",
            claims
        ));
    }

    #[test]
    fn namespaced_claims_fall_back_to_aliases_in_order() {
        let rule_yaml = "{claim: roles, namespaced: true, contains: admin}";
        assert!(holds(
            rule_yaml,
            json!({"https://example.com/roles": ["admin"]})
        ));
        assert!(holds(
            rule_yaml,
            json!({"https://old.example.com/roles": ["admin"]})
        ));
        // The main namespace wins when both are present.
        assert!(!holds(
            rule_yaml,
            json!({"https://example.com/roles": ["user"], "https://old.example.com/roles": ["admin"]})
        ));
        assert!(!holds(rule_yaml, json!({"roles": ["admin"]})));
        let nested = "{claim: [app_metadata, plan], namespaced: true, equals: pro}";
        assert!(holds(
            nested,
            json!({"https://old.example.com/app_metadata": {"plan": "pro"}})
        ));
    }

    #[test]
    fn org_id_is_read_plain_then_namespaced() {
        let ns = namespaces(NS);
        let path = ClaimPath::plain_then_namespaced("org_id", &ns);
        let read = |c: Json| path.lookup(c.as_object().unwrap()).cloned();
        assert_eq!(
            read(json!({"org_id": "org_1", "https://example.com/org_id": "org_2"})),
            Some(json!("org_1"))
        );
        assert_eq!(
            read(json!({"https://example.com/org_id": "org_2"})),
            Some(json!("org_2"))
        );
        assert_eq!(
            read(json!({"https://old.example.com/org_id": "org_3"})),
            Some(json!("org_3"))
        );
        assert_eq!(read(json!({"https://other/org_id": "org_4"})), None);
    }

    #[test]
    fn rules_are_described_for_explain() {
        let ns = namespaces(NS);
        let r = rule("{claim: roles, namespaced: true, contains: admin}", &ns);
        assert_eq!(
            r.describe(),
            r#"claim https://example.com/roles contains "admin""#
        );
        let r = rule("{claim: [address, country], one_of: [DE, FR]}", &ns);
        assert_eq!(
            r.describe(),
            r#"claim address > country one of ["DE","FR"]"#
        );
    }

    #[test]
    fn bad_claim_rules_are_reported() {
        assert_eq!(
            problems("{claim: x}"),
            [(
                "claims[0]".to_owned(),
                "give exactly one of equals, one_of, contains, prefix, exists, absent".to_owned()
            )]
        );
        assert_eq!(
            problems("{claim: x, equals: a, prefix: b}")[0].0,
            "claims[0]"
        );
        assert_eq!(problems("{claim: x, equals: [a]}")[0].0, "claims[0].equals");
        assert_eq!(problems("{claim: x, one_of: []}")[0].0, "claims[0].one_of");
        assert_eq!(
            problems("{claim: x, exists: false}")[0].0,
            "claims[0].exists"
        );
        assert_eq!(
            problems("{claim: '', exists: true}")[0].0,
            "claims[0].claim"
        );
        assert_eq!(
            problems("{claim: [], exists: true}")[0].0,
            "claims[0].claim"
        );
        assert_eq!(
            problems("{claim: roles, namespaced: true, exists: true}"),
            [(
                "claims[0].namespaced".to_owned(),
                "needs claims_namespace".to_owned()
            )]
        );
    }

    #[test]
    fn namespaces_are_checked() {
        let config: PolicyConfig = serde_yaml_ng::from_str(
            "{claims_namespace: 'https://example.com', claims_namespace_aliases: ['https://example.com']}",
        )
        .unwrap();
        let mut problems = Problems::default();
        Namespaces::compile(&mut problems, &config);
        let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "claims_namespace",
                "claims_namespace_aliases[0]",
                "claims_namespace_aliases[0]"
            ]
        );

        let config: PolicyConfig =
            serde_yaml_ng::from_str("{claims_namespace_aliases: ['https://old/']}").unwrap();
        let mut problems = Problems::default();
        Namespaces::compile(&mut problems, &config);
        assert_eq!(problems.0[0].path, "claims_namespace_aliases");
    }
}
