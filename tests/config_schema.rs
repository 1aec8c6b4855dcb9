//! `portcullis config schema`: the committed copy is what the binary prints (drift), every shipped
//! configuration validates against it, and it refuses what the parser refuses for its shape (an unknown
//! key, a wrong type, an unknown enum value, an inline secret), checked with a draft 2020-12 validator.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// The committed schema, the one the examples' `yaml-language-server` lines point at.
const COMMITTED: &str = "schema/portcullis.schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> String {
    let out = Command::new(BIN)
        .args(["config", "schema"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::new(&schema).expect("the schema is a valid draft 2020-12 schema")
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// Every error as `instance path: message`.
fn errors(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_the_one_the_binary_prints() {
    let committed = std::fs::read_to_string(root().join(COMMITTED)).unwrap();
    assert!(
        committed == generated(),
        "{COMMITTED} is not what `portcullis config schema` prints: run `scripts/gen-schema` and commit"
    );
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("schema.json");
    let status = Command::new(BIN)
        .args(["config", "schema", "--output"])
        .arg(&output)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap(), committed);
}

#[test]
fn every_example_and_chart_config_validates_and_points_at_the_schema() {
    let validator = validator();
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let found = errors(&validator, &yaml(&text));
        assert!(found.is_empty(), "{}: {found:#?}", path.display());
        // The editor line is the first line and resolves to the committed schema.
        let first = text.lines().next().unwrap_or_default();
        let target = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}: first line is {first:?}", path.display()));
        let resolved = path.parent().unwrap().join(target);
        assert_eq!(
            resolved.canonicalize().unwrap(),
            root().join(COMMITTED).canonicalize().unwrap(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} examples");
    let chart = root().join("deploy/helm/portcullis");
    for values in [
        chart.join("values.yaml"),
        chart.join("ci/all-on-values.yaml"),
        chart.join("ci/minimal-values.yaml"),
    ] {
        let document = yaml(&std::fs::read_to_string(&values).unwrap());
        let config = &document["config"];
        assert!(config.is_object(), "{}: no config", values.display());
        let found = errors(&validator, config);
        assert!(found.is_empty(), "{}: {found:#?}", values.display());
    }
}

/// The configurations portcullis writes itself validate too: `import llama-stack`'s output (the editor
/// line of its file would point at this schema) and the file `bench` serves with.
#[test]
fn configurations_portcullis_writes_validate() {
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        "server:\n  auth:\n    provider_config:\n      type: oauth2_token\n      jwks: {uri: 'https://idp.example/jwks'}\n      issuer: https://idp.example/\n      audience: llama-stack\n      claims_mapping: {sub: roles, groups: teams}\n",
        "server:\n  auth:\n    provider_config:\n      type: oauth2_token\n      introspection: {url: 'https://idp.example/introspect', client_id: llama-stack, client_secret: '${env.SECRET}', send_secret_in_body: true}\n",
        "server:\n  auth:\n    provider_config:\n      type: custom\n      endpoint: https://auth.example/check\n",
        "server:\n  auth:\n    provider_config:\n      type: github_token\n",
    ];
    for (i, run) in runs.iter().enumerate() {
        let file = dir.path().join(format!("run-{i}.yaml"));
        std::fs::write(&file, run).unwrap();
        let out = Command::new(BIN)
            .args(["import", "llama-stack"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{run}: {out:?}");
        let found = errors(&validator, &yaml(&String::from_utf8(out.stdout).unwrap()));
        assert!(found.is_empty(), "{run}: {found:#?}");
    }

    let keys = portcullis_bench::tokens::Keys::load_or_create(dir.path()).unwrap();
    for http in [false, true] {
        let path = portcullis_bench::tokens::write_server_files(
            dir.path(),
            &keys,
            Some(100),
            http,
            |_| Ok(()),
        )
        .unwrap();
        let found = errors(&validator, &yaml(&std::fs::read_to_string(path).unwrap()));
        assert!(found.is_empty(), "bench (http: {http}): {found:#?}");
    }
}

/// A valid document, then one mistake at a time: each is refused at its path.
#[test]
fn typos_wrong_types_and_inline_secrets_are_refused() {
    let validator = validator();
    let base = yaml(
        "
server: {listen: '0.0.0.0:9001', drain_seconds: 5}
mode: enforce
providers:
  - name: auth0
    type: jwt
    issuer: https://example.eu.auth0.com/
    audiences: [https://api.example.com/]
    shared_secret: {env: HS_SECRET}
    algorithms: [HS256]
  - {name: keys, type: api_key, keys_file: /etc/keys.yaml, credential: {header: x-api-key}}
routes:
  - name: admin
    match: {path_prefix: /admin, headers: {x-tenant: {present: true}}}
    require: {scopes: {all_of: [admin]}, any_of: [{principal: human}]}
",
    );
    assert_eq!(errors(&validator, &base), Vec::<String>::new());

    let cases: [(&str, Value, &str); 9] = [
        ("typo at the top level", json!({"rotues": []}), ""),
        (
            "typo in a section",
            json!({"server": {"listne": "0.0.0.0:1"}}),
            "/server",
        ),
        (
            "wrong type",
            json!({"server": {"drain_seconds": "five"}}),
            "/server/drain_seconds",
        ),
        ("unknown enum value", json!({"mode": "enforcing"}), "/mode"),
        (
            "typo in a route",
            json!({"routes": [{"name": "r", "match": {"paht": "/x"}}]}),
            "/routes/0/match",
        ),
        (
            "a provider key of another kind",
            json!({"providers": [{"name": "a", "type": "jwt", "issuer": "https://i/", "audiences": ["x"], "keys_file": "/k"}]}),
            "/providers/0",
        ),
        (
            "an unknown provider type",
            json!({"providers": [{"name": "a", "type": "saml"}]}),
            "/providers/0",
        ),
        (
            "an inline secret",
            json!({"providers": [{"name": "a", "type": "jwt", "issuer": "https://i/", "audiences": ["x"], "algorithms": ["HS256"], "shared_secret": "hunter2"}]}),
            "/providers/0",
        ),
        (
            "credential on a kind that reads none",
            json!({"providers": [{"name": "m", "type": "mtls", "credential": {"header": "x"}}]}),
            "/providers/0",
        ),
    ];
    for (what, change, path) in cases {
        let mut document = base.clone();
        for (key, value) in change.as_object().unwrap() {
            match (document.get_mut(key), value) {
                (Some(Value::Object(section)), Value::Object(fields)) => {
                    section.extend(fields.clone());
                }
                _ => {
                    document[key] = value.clone();
                }
            }
        }
        let found = errors(&validator, &document);
        assert!(
            found.iter().any(|e| e.starts_with(&format!("{path}: "))),
            "{what}: expected an error at {path:?}, got {found:#?}"
        );
        // The parser refuses the same document.
        let text = serde_yaml_ng::to_string(&document).unwrap();
        assert!(
            portcullis::Config::from_yaml_str(&text).is_err(),
            "{what}: the parser accepts it"
        );
    }
    // Optional keys may be left out; a required one may not.
    let found = errors(&validator, &json!({"server": {}}));
    assert!(
        found
            .iter()
            .any(|e| e.contains("\"providers\" is a required property")),
        "{found:?}"
    );
}

/// Every object in the schema refuses unknown keys, as serde's `deny_unknown_fields` does in the parser,
/// and every key has a description (its doc comment: editors show it, the reference page lists it).
#[test]
fn every_object_in_the_schema_refuses_unknown_keys_and_every_key_is_described() {
    fn walk(node: &Value, at: &str, open: &mut Vec<String>, undescribed: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    if map.get("additionalProperties") != Some(&json!(false)) {
                        open.push(at.to_owned());
                    }
                    for (key, property) in properties {
                        if property.get("description").is_none() {
                            undescribed.push(format!("{at}/properties/{key}"));
                        }
                    }
                }
                for (key, value) in map {
                    walk(value, &format!("{at}/{key}"), open, undescribed);
                }
            }
            Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    walk(value, &format!("{at}/{i}"), open, undescribed);
                }
            }
            _ => {}
        }
    }
    let schema: Value = serde_json::from_str(&generated()).unwrap();
    let (mut open, mut undescribed) = (Vec::new(), Vec::new());
    walk(&schema, "#", &mut open, &mut undescribed);
    assert_eq!(open, Vec::<String>::new());
    assert_eq!(undescribed, Vec::<String>::new(), "add a doc comment");
    assert!(Path::new(&root().join(COMMITTED)).exists());
}
