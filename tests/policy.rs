//! Per-route policy over real gRPC: the three examples in `examples/` with Auth0-shaped tokens minted at
//! test time, 401 vs 403 vs 400, permissive mode, first-match order, context_extensions routing, deny
//! customisation, decision ids and explanations.

use portcullis_test as common;

use common::*;
use portcullis::pb::auth::CheckResponse;
use serde_json::{json, Value};

const AUD: &str = "https://api.example.com/";

/// Serves an example file with its provider pointed at a fake IdP on loopback.
async fn serve_example(name: &str) -> (FakeIdp, TestKey, TestServer) {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("auth0-key");
    idp.set_keys(&[&key]);
    let text =
        std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(text.contains("issuer: https://example.eu.auth0.com/"));
    let yaml = text.replace(
        "issuer: https://example.eu.auth0.com/",
        &format!("issuer: {}", idp.issuer),
    );
    let server = TestServer::start(&yaml).await.ready().await;
    (idp, key, server)
}

/// A person's Auth0 access token (authorization-code flow through the SPA).
fn human(idp: &FakeIdp, permissions: &[&str], extra: Value) -> Value {
    let mut c = claims(&idp.issuer, AUD);
    c["sub"] = json!("auth0|alice");
    c["azp"] = json!("spa-client-id");
    c["permissions"] = json!(permissions);
    merge(c, extra)
}

/// An Auth0 machine-to-machine (client-credentials) token.
fn machine(idp: &FakeIdp, permissions: &[&str], scope: &str) -> Value {
    let mut c = claims(&idp.issuer, AUD);
    c["sub"] = json!("m2m-client@clients");
    c["azp"] = json!("m2m-client");
    c["gty"] = json!("client-credentials");
    c["permissions"] = json!(permissions);
    c["scope"] = json!(scope);
    c
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            base[k] = v;
        }
    }
    base
}

async fn call(server: &TestServer, method: &str, path: &str, token: Option<&str>) -> CheckResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let req = request_to(method, path, &headers);
    server.send(req).await
}

fn status(response: &CheckResponse) -> u16 {
    match &response.http_response {
        Some(portcullis::pb::auth::check_response::HttpResponse::OkResponse(_)) => 200,
        _ => denied(response).status.as_ref().unwrap().code as u16,
    }
}

fn challenge(response: &CheckResponse) -> String {
    header(&denied(response).headers, "www-authenticate")
        .unwrap()
        .to_owned()
}

/// Asserts the response's status and that its challenge contains every part.
fn assert_denied(response: &CheckResponse, status_code: u16, parts: &[&str]) {
    assert_eq!(status(response), status_code, "{response:?}");
    let challenge = challenge(response);
    for part in parts {
        assert!(
            challenge.contains(part),
            "{challenge} should contain {part}"
        );
    }
}

#[tokio::test]
async fn auth0_trading_permissions_step_up_and_organizations() {
    let (idp, key, server) = serve_example("auth0-trading.yaml").await;
    let now = now();

    assert_eq!(
        status(&call(&server, "GET", "/healthz", None).await),
        200,
        "anonymous health"
    );
    let none = call(&server, "GET", "/v1/portfolio/positions", None).await;
    assert_eq!(status(&none), 401);
    assert_eq!(challenge(&none), "Bearer realm=\"trading-api\"");

    // Kill switch: permission + MFA within 180 s.
    let fresh_mfa = json!({"amr": ["pwd", "mfa"], "auth_time": now - 60});
    let ok_token = key.token(&human(&idp, &["kill_switch:execute"], fresh_mfa.clone()));
    assert_eq!(
        status(&call(&server, "POST", "/v1/kill-switch", Some(&ok_token)).await),
        200
    );

    let no_permission = key.token(&human(&idp, &["read:portfolio"], fresh_mfa));
    let r = call(&server, "POST", "/v1/kill-switch", Some(&no_permission)).await;
    assert_denied(
        &r,
        403,
        &[
            "error=\"insufficient_scope\"",
            "scope=\"kill_switch:execute\"",
        ],
    );
    assert_eq!(r.status.as_ref().unwrap().code, 7, "PERMISSION_DENIED");

    let stale = key.token(&human(
        &idp,
        &["kill_switch:execute"],
        json!({"amr": ["mfa"], "auth_time": now - 600}),
    ));
    let r = call(&server, "POST", "/v1/kill-switch", Some(&stale)).await;
    assert_denied(
        &r,
        401,
        &[
            "error=\"insufficient_user_authentication\"",
            "max_age=\"180\"",
        ],
    );
    let no_mfa = key.token(&human(
        &idp,
        &["kill_switch:execute"],
        json!({"amr": ["pwd"], "auth_time": now - 10}),
    ));
    assert_eq!(
        status(&call(&server, "POST", "/v1/kill-switch", Some(&no_mfa)).await),
        401
    );

    // A machine token never engages the kill switch, whatever it holds.
    let m2m = key.token(&machine(&idp, &["kill_switch:execute"], ""));
    assert_eq!(
        status(&call(&server, "POST", "/v1/kill-switch", Some(&m2m)).await),
        403
    );

    // Tenant admin: the org claim must name the tenant in the path (plain, namespaced, or the old namespace).
    for org_claim in [
        "org_id",
        "https://alphaswarm.internal/org_id",
        "https://alphaswarm/org_id",
    ] {
        let t = key.token(&human(
            &idp,
            &["admin:tenant"],
            json!({ org_claim: "org_acme" }),
        ));
        let r = call(&server, "GET", "/v1/tenants/org_acme/admin/users", Some(&t)).await;
        assert_eq!(status(&r), 200, "{org_claim}");
    }
    let other = key.token(&human(
        &idp,
        &["admin:tenant"],
        json!({"org_id": "org_globex"}),
    ));
    let r = call(
        &server,
        "GET",
        "/v1/tenants/org_acme/admin/users",
        Some(&other),
    )
    .await;
    assert_eq!(
        status(&r),
        403,
        "a tenant never reaches another tenant's path"
    );
    let d = denied(&r);
    assert_eq!(
        header(&d.headers, "x-deny-scope"),
        Some("tenant"),
        "route deny headers"
    );
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(
        body["route"], "tenant-admin",
        "route deny body template: {}",
        d.body
    );
    assert_eq!(body["decision_id"].as_str().unwrap().len(), 24);

    // Strategies and portfolio.
    let deployer = key.token(&human(&idp, &["deploy:strategy"], json!({})));
    assert_eq!(
        status(&call(&server, "POST", "/v1/strategies/s1/deploy", Some(&deployer)).await),
        200
    );
    let writer = key.token(&human(&idp, &["write:strategy"], json!({})));
    let r = call(&server, "POST", "/v1/strategies/s1/deploy", Some(&writer)).await;
    assert_denied(&r, 403, &["scope=\"deploy:strategy\""]);
    assert_eq!(
        status(&call(&server, "PUT", "/v1/strategies/s1", Some(&writer)).await),
        200
    );
    assert_eq!(
        status(&call(&server, "GET", "/v1/strategies/s1", Some(&writer)).await),
        200
    );
    let reader = key.token(&human(&idp, &["read:portfolio"], json!({})));
    assert_eq!(
        status(&call(&server, "GET", "/v1/portfolio/positions?x=1", Some(&reader)).await),
        200
    );
    assert_eq!(
        status(&call(&server, "GET", "/v1/strategies/s1", Some(&reader)).await),
        403
    );
    // An unlisted route falls to the default route, which wants admin:cluster.
    let r = call(&server, "GET", "/v1/unlisted", Some(&reader)).await;
    assert_denied(&r, 403, &["scope=\"admin:cluster\""]);
}

#[tokio::test]
async fn research_platform_labelers_researchers_and_machines() {
    let (idp, key, server) = serve_example("research-platform.yaml").await;
    let labeler = key.token(&human(&idp, &["data-labeler"], json!({})));
    assert_eq!(
        status(&call(&server, "GET", "/api/getRunForLabeling", Some(&labeler)).await),
        200
    );
    assert_eq!(
        status(&call(&server, "POST", "/api/runs/r1/labels/add", Some(&labeler)).await),
        200
    );
    assert_eq!(
        status(&call(&server, "POST", "/api/queryRuns", Some(&labeler)).await),
        403
    );
    // Other pages: the default route is permissive, so the labeler passes, marked.
    let r = call(&server, "GET", "/runs", Some(&labeler)).await;
    let allowed = ok(&r);
    assert_eq!(
        header(&allowed.headers, "x-auth-would-deny"),
        Some("forbidden_permission")
    );

    let researcher = key.token(&human(&idp, &["researcher-database-access"], json!({})));
    assert_eq!(
        status(&call(&server, "POST", "/api/queryRuns", Some(&researcher)).await),
        200
    );
    let plain = key.token(&human(&idp, &[], json!({})));
    let r = call(&server, "POST", "/api/queryRuns", Some(&plain)).await;
    assert_denied(&r, 403, &["scope=\"researcher-database-access\""]);

    assert_eq!(
        status(&call(&server, "POST", "/hooks/submission", Some(&plain)).await),
        200
    );
}

/// Vivaria's four kinds of token against what `machine` allows (starting runs) and the agent routes.
#[tokio::test]
async fn research_platform_token_kinds_follow_the_vivaria_model() {
    let (idp, key, server) = serve_example("research-platform.yaml").await;
    // A person (the SPA login).
    let human_token = key.token(&human(&idp, &[], json!({})));
    // A machine user: the CI application's client-credentials token, holding `machine`.
    let machine_token = key.token(&machine(&idp, &["machine"], ""));
    // The agent application's client-credentials token: no `machine`.
    let mut agent = machine(&idp, &[], "");
    agent["sub"] = json!("agent-app@clients");
    agent["azp"] = json!("agent-app");
    let agent_token = key.token(&agent);
    // A delegated token: an agent acting for alice (RFC 8693 `act`), with alice's permissions.
    let delegated_token = key.token(&human(
        &idp,
        &[],
        json!({"act": {"sub": "agent-app@clients"}}),
    ));

    let start = |t: String| {
        let server = &server;
        async move { call(server, "POST", "/api/runs/new", Some(&t)).await }
    };
    assert_eq!(
        status(&start(human_token.clone()).await),
        200,
        "a person starts runs"
    );
    assert_eq!(
        status(&start(machine_token.clone()).await),
        200,
        "`machine` starts runs"
    );
    let r = start(agent_token.clone()).await;
    assert_denied(&r, 403, &[]);
    let r = start(delegated_token.clone()).await;
    assert_denied(&r, 403, &[]);
    // A person's token carrying `machine` stays a person's; a client-credentials token with `machine`
    // but acting for someone else does not start runs either.
    let mut acting_machine = machine(&idp, &["machine"], "");
    acting_machine["act"] = json!({"sub": "someone"});
    assert_denied(&start(key.token(&acting_machine)).await, 403, &[]);

    let hook = |t: String| {
        let server = &server;
        async move { call(server, "POST", "/hooks/submission", Some(&t)).await }
    };
    assert_eq!(
        status(&hook(human_token.clone()).await),
        200,
        "an agent with a person's token"
    );
    assert_eq!(
        status(&hook(agent_token.clone()).await),
        200,
        "the agent application's token"
    );
    assert_eq!(
        status(&hook(delegated_token.clone()).await),
        200,
        "an agent acting for a person"
    );
    assert_eq!(
        status(&hook(machine_token.clone()).await),
        403,
        "a machine user's token never reaches the agent routes"
    );
}

#[tokio::test]
async fn service_to_service_scopes_on_get_and_post() {
    let (idp, key, server) = serve_example("service-to-service.yaml").await;
    let reader = key.token(&machine(&idp, &[], "read:data"));
    let r = call(&server, "GET", "/data/items", Some(&reader)).await;
    let allowed = ok(&r);
    assert_eq!(
        header(&allowed.headers, "x-auth-client-id"),
        Some("m2m-client")
    );
    assert_eq!(
        allowed.headers_to_remove,
        vec!["authorization"],
        "remove_authorization"
    );
    let r = call(&server, "POST", "/data/items", Some(&reader)).await;
    assert_denied(&r, 403, &["scope=\"write:data\""]);
    let writer = key.token(&machine(&idp, &[], "read:data write:data"));
    assert_eq!(
        status(&call(&server, "POST", "/data/items", Some(&writer)).await),
        200
    );
    // A person's token is refused even with the scope.
    let mut person = human(&idp, &[], json!({}));
    person["scope"] = json!("read:data");
    assert_eq!(
        status(&call(&server, "GET", "/data/items", Some(&key.token(&person))).await),
        403
    );
    assert_eq!(
        status(&call(&server, "DELETE", "/data/items", Some(&writer)).await),
        403
    );
}

fn inline_config(idp: &FakeIdp, policy: &str) -> String {
    format!(
        "server: {{drain_seconds: 0, allow_explain: true}}
providers:
  - {{name: idp, type: jwt, issuer: '{}', audiences: ['{AUD}']}}
{policy}",
        idp.issuer
    )
}

#[tokio::test]
async fn first_match_wins_and_context_extensions_route() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k");
    idp.set_keys(&[&key]);
    let yaml = inline_config(
        &idp,
        "routes:
  - {name: billing-admin, match: {context_extensions: {service: billing}, path_prefix: /admin}, require: {scopes: {all_of: [billing:admin]}}}
  - {name: admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [admin]}}}
  - {name: admin-shadowed, match: {path_prefix: /admin/users}, require: {scopes: {all_of: [never]}}}",
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let admin = key.token(&merge(claims(&idp.issuer, AUD), json!({"scope": "admin"})));
    // /admin/users matches `admin` first; the later, stricter route never applies.
    assert_eq!(
        status(&call(&server, "GET", "/admin/users", Some(&admin)).await),
        200
    );

    // The same path with Envoy's context extension for billing takes the billing route.
    let auth = format!("Bearer {admin}");
    let mut req = request(&[("authorization", &auth)]);
    req.attributes.as_mut().unwrap().context_extensions =
        [("service".to_owned(), "billing".to_owned())].into();
    http_of(&mut req).path = "/admin/users".into();
    let r = server.send(req).await;
    assert_denied(&r, 403, &["scope=\"billing:admin\""]);
    // Anything else: the default route, no requirement.
    assert_eq!(status(&call(&server, "GET", "/", Some(&admin)).await), 200);
}

#[tokio::test]
async fn permissive_mode_allows_marks_and_counts() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k");
    idp.set_keys(&[&key]);
    let yaml = inline_config(
        &idp,
        "mode: permissive
routes:
  - {name: strict, match: {path_prefix: /strict}, mode: enforce, require: {scopes: {all_of: [x]}}}
default_route: {require: {scopes: {all_of: [x]}}}",
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let token = key.token(&claims(&idp.issuer, AUD));
    let auth = format!("Bearer {token}");

    let r = server
        .check(&[("authorization", &auth), ("x-auth-would-deny", "forged")])
        .await;
    let allowed = ok(&r);
    assert_eq!(
        header(&allowed.headers, "x-auth-would-deny"),
        Some("missing_scope")
    );
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("user-1"));
    let metadata = r.dynamic_metadata.as_ref().unwrap();
    assert!(matches!(
        &metadata.fields["would_deny"].kind,
        Some(prost_types::value::Kind::StringValue(s)) if s == "missing_scope"
    ));

    // Without any token: through, marked, and no identity headers.
    let r = server.check(&[("x-auth-subject", "mallory")]).await;
    let allowed = ok(&r);
    assert_eq!(
        header(&allowed.headers, "x-auth-would-deny"),
        Some("missing_credential")
    );
    assert_eq!(header(&allowed.headers, "x-auth-subject"), None);
    assert_eq!(
        allowed.headers_to_remove,
        vec!["x-auth-subject"],
        "client identity headers still go"
    );

    // A route in enforce mode still denies.
    assert_eq!(
        status(&call(&server, "GET", "/strict", Some(&token)).await),
        403
    );

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("portcullis_checks_total{decision=\"permit\",reason=\"missing_scope\",route=\"default\",provider=\"idp\",transport=\"grpc\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("portcullis_checks_total{decision=\"permit\",reason=\"missing_credential\",route=\"default\",provider=\"\",transport=\"grpc\"} 1"));
    assert!(
        metrics.contains("portcullis_checks_total{decision=\"deny\",reason=\"missing_scope\",route=\"strict\",provider=\"idp\",transport=\"grpc\"} 1")
    );
}

#[tokio::test]
async fn decision_ids_are_everywhere_and_unique() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k");
    idp.set_keys(&[&key]);
    let server = TestServer::start(&inline_config(&idp, ""))
        .await
        .ready()
        .await;
    let token = key.token(&claims(&idp.issuer, AUD));
    let a = server.check_bearer(&token).await;
    let b = server.check_bearer(&token).await;
    let id = |r: &CheckResponse| {
        header(&ok(r).headers, "x-auth-decision-id")
            .unwrap()
            .to_owned()
    };
    assert_eq!(id(&a).len(), 24);
    assert!(id(&a).bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(id(&a), id(&b));
    assert!(matches!(
        &a.dynamic_metadata.as_ref().unwrap().fields["decision_id"].kind,
        Some(prost_types::value::Kind::StringValue(s)) if *s == id(&a)
    ));
    let denied_body: Value = serde_json::from_str(&denied(&server.check(&[]).await).body).unwrap();
    assert_eq!(denied_body["decision_id"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn explanations_only_when_the_server_allows_them() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k");
    idp.set_keys(&[&key]);
    let policy = "routes:\n  - {name: admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [admin]}}}";
    let token = key.token(&claims(&idp.issuer, AUD));
    let auth = format!("Bearer {token}");
    let ask = |server: &TestServer| {
        let mut req = request(&[("authorization", &auth), ("x-portcullis-explain", "true")]);
        http_of(&mut req).path = "/admin/x".into();
        let addr = server.grpc;
        async move {
            portcullis::pb::auth::authorization_client::AuthorizationClient::connect(format!(
                "http://{addr}"
            ))
            .await
            .unwrap()
            .check(req)
            .await
            .unwrap()
            .into_inner()
        }
    };
    let server = TestServer::start(&inline_config(&idp, policy))
        .await
        .ready()
        .await;
    let (_, described) = portcullis::client::describe(&ask(&server).await);
    let explanation = &described["explanation"];
    assert_eq!(explanation["route"]["route"], "admin", "{described}");
    assert_eq!(explanation["decision"], "deny");
    assert_eq!(explanation["reason"], "missing_scope");
    assert_eq!(explanation["providers"][0]["outcome"], "authenticated");
    let failed: Vec<&Value> = explanation["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{explanation}");

    let closed =
        TestServer::start(&inline_config(&idp, policy).replace(", allow_explain: true", ""))
            .await
            .ready()
            .await;
    let (_, described) = portcullis::client::describe(&ask(&closed).await);
    assert!(described.get("explanation").is_none(), "{described}");
}

#[tokio::test]
async fn policy_denials_name_the_provider_and_principal() {
    use portcullis::Decision;
    use portcullis::{Headers, RequestView};
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k");
    idp.set_keys(&[&key]);
    let policy = "default_route: {require: {scopes: {all_of: [admin]}}}";
    let server = TestServer::start(&inline_config(&idp, policy))
        .await
        .ready()
        .await;
    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, AUD)));
    let pairs = [("authorization", auth.as_str())];
    let view = RequestView::new("GET", "/", "h", Headers::Pairs(&pairs), "");
    let runtime = server.app.runtime();
    let verdict = runtime.decide(&view, false).await;
    let Decision::Deny(denial) = verdict.decision else {
        panic!("expected a denial: {:?}", verdict.decision)
    };
    assert_eq!(denial.label(), "missing_scope");
    assert_eq!(denial.provider.as_deref(), Some("idp"));
    assert_eq!(denial.principal.as_deref(), Some("user-1"));
}

/// `examples/agent-platform.yaml`: DPoP, delegated agent tokens and a strict MCP resource.
#[tokio::test]
async fn agent_platform_example() {
    let (idp, key, server) = serve_example("agent-platform.yaml").await;
    let mcp = "https://api.example.com/mcp/data";
    let send = |path: &'static str, headers: Vec<(String, String)>| {
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            server.send(request_to("GET", path, &pairs)).await
        }
    };
    let bearer = |c: &Value| {
        vec![(
            "authorization".to_owned(),
            format!("Bearer {}", key.token(c)),
        )]
    };

    // The metadata document, without a token.
    let response = send("/.well-known/oauth-protected-resource/mcp/data", vec![]).await;
    let d = denied(&response);
    assert_eq!(d.status.as_ref().unwrap().code, 200);
    let doc: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(doc["resource"], mcp);
    assert_eq!(doc["dpop_bound_access_tokens_required"], true);

    // An agent token for the API in general: 401 on the MCP resource, pointing at the document.
    let mut agent = human(
        &idp,
        &["read:data"],
        json!({"act": {"sub": "agent-broker@clients"}}),
    );
    let response = send("/mcp/data/q", bearer(&agent)).await;
    assert_eq!(
        response.status.as_ref().unwrap().message,
        "audience_mismatch"
    );
    let challenge = header(&denied(&response).headers, "www-authenticate").unwrap();
    assert!(challenge.contains("resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/mcp/data\""), "{challenge}");

    // With the MCP audience but as Bearer (not bound): the route wants DPoP.
    agent["aud"] = json!([AUD, mcp]);
    let response = send("/mcp/data/q", bearer(&agent)).await;
    assert_eq!(response.status.as_ref().unwrap().message, "dpop_required");

    // Delegated tokens are refused where delegation is not allowed.
    let response = send("/v1/anything", bearer(&agent)).await;
    assert_eq!(
        response.status.as_ref().unwrap().message,
        "delegation_not_allowed"
    );
    // A person's own token passes there.
    ok(&send("/v1/anything", bearer(&human(&idp, &[], json!({})))).await);
}
