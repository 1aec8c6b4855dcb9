//! The decision log over real gRPC, captured through the same layer `telemetry` installs: one JSON line
//! per denial, error and permissive would-deny, allows sampled at `decision_log.allow_sample_rate`, the
//! fields the log promises, no credential ever, and the target turned off by a `RUST_LOG`-style filter.

use portcullis_test as common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::Value;
use sha2::Digest as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

const AUD: &str = "https://api.example.com/";
const API_KEY: &str = "pk_live_do-not-log-me-42";

/// A writer whose output the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

fn config(idp: &FakeIdp, rate: &str) -> String {
    let digest: String = sha2::Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "server: {{drain_seconds: 0}}
decision_log: {{allow_sample_rate: {rate}}}
providers:
  - name: people
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
  - name: keys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{digest}', principal: ci-bot}}]
routes:
  - name: rollout
    match: {{path_prefix: /rollout}}
    mode: permissive
    require: {{scopes: {{all_of: [admin]}}}}
  - name: api
    match: {{path_prefix: /api}}
",
        iss = idp.issuer
    )
}

fn with_origin(mut req: portcullis::pb::auth::CheckRequest) -> portcullis::pb::auth::CheckRequest {
    use portcullis::pb::envoy::config::core::v3::{
        address, socket_address, Address, SocketAddress,
    };
    let attributes = req.attributes.as_mut().unwrap();
    attributes.source = Some(portcullis::pb::auth::attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "203.0.113.7".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(51234)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    req
}

#[tokio::test(flavor = "current_thread")]
async fn denials_and_would_denies_are_logged_allows_sampled_and_credentials_never() {
    let out = Captured::default();
    let subscriber =
        tracing_subscriber::registry().with(portcullis::telemetry::decision_layer(out.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = TestServer::start(&config(&idp, "0")).await.ready().await;
    let token = key.token(&claims(&idp.issuer, AUD));
    let bearer = format!("Bearer {token}");
    let mut expired = claims(&idp.issuer, AUD);
    expired["exp"] = serde_json::json!(now() - 3600);
    let expired = key.token(&expired);
    let expired_bearer = format!("Bearer {expired}");

    // An allow (rate 0: not logged), an allow by API key (not logged).
    ok(&server
        .send(request_to("GET", "/api/a", &[("authorization", &bearer)]))
        .await);
    ok(&server
        .send(request_to("GET", "/api/a", &[("x-api-key", API_KEY)]))
        .await);
    // A denial of an expired token, with request id and trace context, from a known client address.
    let mut req = request_to(
        "GET",
        "/api/b",
        &[
            ("authorization", &expired_bearer),
            ("x-request-id", "req-77"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    );
    req = with_origin(req);
    denied(&server.send(req).await);
    // A denial of a wrong API key, and a permissive-mode would-deny (missing scope) with a valid token.
    denied(
        &server
            .send(request_to(
                "GET",
                "/api/c",
                &[("x-api-key", "pk_live_wrong-key-99")],
            ))
            .await,
    );
    ok(&server
        .send(request_to(
            "GET",
            "/rollout/x",
            &[("authorization", &bearer)],
        ))
        .await);

    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{}", out.text());
    let expired_line = &lines[0];
    for (field, want) in [
        ("authz.decision", "deny"),
        ("authz.reason", "expired"),
        ("authz.route", "api"),
        ("provider.name", "people"),
        // A rejected token's subject is not vouched for: not logged.
        ("principal", ""),
        ("request.id", "req-77"),
        ("trace.id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("source.address", "203.0.113.7:51234"),
        ("target", "portcullis::decision"),
    ] {
        assert_eq!(expired_line[field], want, "{field} in {expired_line}");
    }
    let id = expired_line["authz.decision_id"].as_str().unwrap();
    assert_eq!(id.len(), 24, "{expired_line}");
    let time = expired_line["time"].as_str().unwrap();
    assert!(
        time.len() > 20 && time.ends_with('Z') && time.contains('T'),
        "{time}"
    );
    assert_eq!(lines[1]["authz.decision"], "deny");
    assert_eq!(lines[1]["authz.reason"], "unknown_api_key", "{}", lines[1]);
    assert_eq!(lines[2]["authz.decision"], "permit");
    assert_eq!(lines[2]["authz.reason"], "missing_scope");
    assert_eq!(lines[2]["authz.route"], "rollout");
    assert_eq!(lines[2]["principal"], "user-1");

    // No credential, whole or in part.
    let text = out.text();
    for secret in [
        token.as_str(),
        expired.as_str(),
        API_KEY,
        "pk_live_wrong-key-99",
        token.rsplit('.').next().unwrap(),
    ] {
        assert!(!text.contains(secret), "a credential in the decision log");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_allow_is_logged_at_rate_one_and_a_filter_turns_the_log_off() {
    let on = Captured::default();
    let off = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(portcullis::telemetry::decision_layer(on.clone()))
        .with(
            portcullis::telemetry::decision_layer(off.clone()).with_filter(
                tracing_subscriber::EnvFilter::new("info,portcullis::decision=off"),
            ),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = TestServer::start(&config(&idp, "1.0")).await.ready().await;
    let token = key.token(&claims(&idp.issuer, AUD));
    for _ in 0..3 {
        ok(&server.check_bearer(&token).await);
    }
    let lines = on.lines();
    assert_eq!(lines.len(), 3, "{}", on.text());
    assert!(lines
        .iter()
        .all(|l| l["authz.decision"] == "allow" && l["provider.name"] == "people"));
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["authz.decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "one id per decision");
    assert_eq!(off.text(), "", "portcullis::decision=off silences it");
}
