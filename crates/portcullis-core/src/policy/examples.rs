//! The configurations in `examples/`: each one's policy validates, and representative identities get the
//! answers the example promises.

use serde_json::json;
use serde_yaml_ng::{Mapping, Value};

use super::testing::{identity, machine};
use super::{Policy, ProviderInfo};
use crate::config::{PolicyConfig, POLICY_KEYS};
use crate::identity::Identity;
use crate::request::{Headers, RequestView};

const NOW: i64 = 1_700_000_000;

/// The policy part of a full configuration, checked against the document's provider names.
fn load(text: &str) -> Policy {
    let doc: Mapping = serde_yaml_ng::from_str(text).expect("example is YAML");
    for key in doc.keys() {
        let key = key.as_str().unwrap();
        let known = ["server", "realm", "headers", "providers"].contains(&key);
        assert!(
            known || POLICY_KEYS.contains(&key),
            "unexpected top-level key {key}"
        );
    }
    let providers: Vec<&str> = doc["providers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let policy: Mapping = doc
        .iter()
        .filter(|(k, _)| POLICY_KEYS.contains(&k.as_str().unwrap()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let config: PolicyConfig = serde_yaml_ng::from_value(Value::Mapping(policy)).unwrap();
    let providers: Vec<ProviderInfo<'_>> = providers
        .into_iter()
        .map(|name| ProviderInfo {
            name,
            challenge_scheme: Some("Bearer"),
        })
        .collect();
    Policy::compile(&config, &providers, "portcullis")
        .unwrap_or_else(|problems| panic!("{problems:#?}"))
}

/// `200`, or the status and label of the denial, after the route's own `deny.status`.
fn answer(policy: &Policy, id: &Identity, method: &str, path: &str) -> (u16, &'static str, String) {
    let request = RequestView::new(method, path, "api.example.com", Headers::Pairs(&[]), "");
    let route = policy.route(&request);
    let name = route.name().to_owned();
    match route.evaluate(id, &request, NOW) {
        Ok(()) => (200, "allow", name),
        Err(unmet) => (
            route.deny().status().unwrap_or(unmet.status()),
            unmet.as_str(),
            name,
        ),
    }
}

fn person(permissions: &[&str]) -> Identity {
    identity("openid profile", json!({ "permissions": permissions }))
}

#[test]
fn auth0_trading() {
    let p = load(include_str!("../../../../examples/auth0-trading.yaml"));
    let ask = |id: &Identity, method, path| {
        let (status, label, _) = answer(&p, id, method, path);
        (status, label)
    };

    let reader = person(&["read:portfolio"]);
    assert_eq!(
        ask(&reader, "GET", "/v1/portfolio/positions"),
        (200, "allow")
    );
    assert_eq!(
        ask(&reader, "POST", "/v1/strategies"),
        (403, "missing_permission")
    );
    assert_eq!(
        ask(&reader, "GET", "/v1/unlisted"),
        (403, "missing_permission")
    );

    let author = person(&["write:strategy"]);
    assert_eq!(ask(&author, "POST", "/v1/strategies"), (200, "allow"));
    assert_eq!(ask(&author, "PUT", "/v1/strategies/s1"), (200, "allow"));
    assert_eq!(ask(&author, "GET", "/v1/strategies/s1"), (200, "allow"));
    assert_eq!(
        ask(&author, "POST", "/v1/strategies/s1/deploy"),
        (403, "missing_permission")
    );
    assert_eq!(
        ask(
            &person(&["deploy:strategy"]),
            "POST",
            "/v1/strategies/s1/deploy"
        ),
        (200, "allow")
    );

    // The kill switch: permission, then MFA within 180 s.
    let kill = |claims| identity("", claims);
    let fresh = kill(
        json!({"permissions": ["kill_switch:execute"], "amr": ["pwd", "mfa"], "auth_time": NOW - 30}),
    );
    assert_eq!(ask(&fresh, "POST", "/v1/kill-switch"), (200, "allow"));
    let stale = kill(
        json!({"permissions": ["kill_switch:execute"], "amr": ["mfa"], "auth_time": NOW - 181}),
    );
    assert_eq!(
        ask(&stale, "POST", "/v1/kill-switch"),
        (401, "auth_too_old")
    );
    let no_mfa =
        kill(json!({"permissions": ["kill_switch:execute"], "amr": ["pwd"], "auth_time": NOW}));
    assert_eq!(
        ask(&no_mfa, "POST", "/v1/kill-switch"),
        (401, "amr_not_met")
    );
    let mfa_only = kill(json!({"amr": ["mfa"], "auth_time": NOW}));
    assert_eq!(
        ask(&mfa_only, "POST", "/v1/kill-switch"),
        (403, "missing_permission")
    );
    let request = RequestView::new("POST", "/v1/kill-switch", "h", Headers::Pairs(&[]), "");
    let unmet = p
        .route(&request)
        .evaluate(&stale, &request, NOW)
        .unwrap_err();
    assert_eq!(unmet.error_code(), "insufficient_user_authentication");
    assert_eq!(
        unmet.challenge_params().collect::<Vec<_>>(),
        [("max_age", "180")]
    );

    // Tenant admin: org_id (plain, namespaced, or under the old namespace) must be the path's tenant.
    let admin = |org_claim: &str| {
        identity(
            "",
            json!({"permissions": ["admin:tenant"], org_claim: "org_1"}),
        )
    };
    for claim in [
        "org_id",
        "https://alphaswarm.internal/org_id",
        "https://alphaswarm/org_id",
    ] {
        assert_eq!(
            ask(&admin(claim), "GET", "/v1/tenants/org_1/admin/users"),
            (200, "allow"),
            "{claim}"
        );
        assert_eq!(
            ask(&admin(claim), "GET", "/v1/tenants/org_2/admin/users"),
            (403, "wrong_organization")
        );
    }
    assert_eq!(
        ask(
            &admin("org_id"),
            "GET",
            "/v1/tenants/org_1/admin/../../org_2/admin"
        ),
        (403, "wrong_organization")
    );
    let (_, _, route) = answer(&p, &admin("org_id"), "GET", "/v1/tenants/org_2/admin");
    let deny = p.routes().find(|r| r.name() == route).unwrap().deny();
    assert_eq!(
        deny.headers().collect::<Vec<_>>(),
        [("x-deny-scope", "tenant")]
    );

    let anonymous_route = p.route(&RequestView::new(
        "GET",
        "/healthz",
        "h",
        Headers::Pairs(&[]),
        "",
    ));
    assert!(anonymous_route.allow_anonymous());
}

#[test]
fn research_platform() {
    let p = load(include_str!("../../../../examples/research-platform.yaml"));
    let ask = |id: &Identity, method, path| {
        let (status, label, _) = answer(&p, id, method, path);
        (status, label)
    };

    let labeler = person(&["data-labeler"]);
    assert_eq!(
        ask(&labeler, "GET", "/api/getRunForLabeling"),
        (200, "allow")
    );
    assert_eq!(ask(&labeler, "POST", "/api/runs/42/labels"), (200, "allow"));
    assert_eq!(
        ask(&labeler, "POST", "/api/runs"),
        (403, "forbidden_permission")
    );
    assert_eq!(
        ask(&labeler, "POST", "/api/queryRuns"),
        (403, "missing_permission")
    );
    // The default route is permissive: the labeler is let through, and the decision is marked.
    let (status, label, route) = answer(&p, &labeler, "GET", "/runs/42");
    assert_eq!(
        (status, label, route.as_str()),
        (403, "forbidden_permission", "default")
    );
    let request = RequestView::new("GET", "/runs/42", "h", Headers::Pairs(&[]), "");
    assert_eq!(p.route(&request).mode(), super::Mode::Permissive);

    let researcher = person(&["researcher-database-access"]);
    assert_eq!(ask(&researcher, "POST", "/api/queryRuns"), (200, "allow"));
    assert_eq!(
        ask(&person(&[]), "POST", "/api/queryRuns"),
        (403, "missing_permission")
    );

    // Machine users (holding `machine`) start runs; the agent routes refuse them, whichever way they
    // are machines. The agent application's tokens (client credentials without `machine`) and delegated
    // tokens (`act`) call the agent routes but never start runs.
    let ci = machine("github-actions", "", json!({"permissions": ["machine"]}));
    let machine_permission = person(&["machine"]);
    assert_eq!(ask(&ci, "POST", "/api/runs"), (200, "allow"));
    assert_eq!(
        ask(&machine_permission, "POST", "/api/runs"),
        (200, "allow")
    );
    assert_eq!(
        ask(&ci, "POST", "/hooks/log"),
        (403, "forbidden_permission")
    );
    assert_eq!(
        ask(&machine_permission, "POST", "/hooks/log"),
        (403, "forbidden_permission")
    );
    assert_eq!(ask(&person(&[]), "POST", "/hooks/log"), (200, "allow"));
    let agent = machine("agent-application", "", json!({"permissions": []}));
    assert_eq!(ask(&agent, "POST", "/hooks/log"), (200, "allow"));
    assert_eq!(
        ask(&agent, "POST", "/api/runs"),
        (403, "machine_not_allowed")
    );
    let mut delegated = person(&[]);
    delegated
        .claims
        .insert("act".into(), json!({"sub": "agent-application"}));
    delegated.actors = vec!["agent-application".to_owned()];
    assert_eq!(ask(&delegated, "POST", "/hooks/log"), (200, "allow"));
    assert_eq!(
        ask(&delegated, "POST", "/api/runs"),
        (403, "delegation_not_allowed")
    );
    // An agent acting for an agent acting for a person goes past `max_depth: 1`.
    delegated.actors.push("another-agent".to_owned());
    assert_eq!(
        ask(&delegated, "POST", "/hooks/log"),
        (403, "delegation_too_deep")
    );
}

#[test]
fn service_to_service() {
    let p = load(include_str!("../../../../examples/service-to-service.yaml"));
    let ask = |id: &Identity, method, path| {
        let (status, label, _) = answer(&p, id, method, path);
        (status, label)
    };

    let reader = machine(
        "reporting",
        "read:data",
        json!({"gty": "client-credentials"}),
    );
    let writer = machine(
        "ingest",
        "read:data write:data",
        json!({"gty": "client-credentials"}),
    );
    assert_eq!(ask(&reader, "GET", "/data/items?page=2"), (200, "allow"));
    assert_eq!(ask(&reader, "POST", "/data/items"), (403, "missing_scope"));
    assert_eq!(ask(&writer, "POST", "/data/items"), (200, "allow"));
    assert_eq!(
        ask(&writer, "DELETE", "/data/items/1"),
        (403, "missing_scope")
    );
    // A person's token never reaches the data, whatever its scopes.
    assert_eq!(
        ask(&identity("read:data", json!({})), "GET", "/data/items"),
        (403, "human_not_allowed")
    );

    let request = RequestView::new("POST", "/data/items", "h", Headers::Pairs(&[]), "");
    let unmet = p
        .route(&request)
        .evaluate(&reader, &request, NOW)
        .unwrap_err();
    assert_eq!(
        unmet.challenge_params().collect::<Vec<_>>(),
        [("scope", "write:data")]
    );
}
