//! Shared state that survives a Redis failure, with real `redis-server` processes on free loopback ports
//! started by each test: a Sentinel-managed master failing over to its replica, a three-master Redis
//! Cluster, and a replica cut off from Redis by a TCP relay that catches up as soon as its link is back.

use portcullis_test as common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::redis::{ClusterSetup, RedisServer, Relay, SentinelSetup};
use common::*;
use portcullis::pb::auth::CheckResponse;
use portcullis::{Clock, Sources};
use serde_json::{json, Value};

const AUD: &str = "https://api.example.com/";
const ADMIN: &str = "admin-secret-0123456789";
const AUTH0: &str = "auth0-stream-secret-9876543210";

/// The longest a test waits for a change that should take well under a second: long enough for a loaded
/// machine, far shorter than the 30 s periodic resync, so passing proves the change did not wait for it.
/// What the DPoP-bound requests ask for (`dpop` below).
const URI: &str = "https://api.example.com/api/items";

const BOUND: Duration = Duration::from_secs(5);

fn secrets() -> Sources {
    portcullis::io::sources_with(HashMap::from([
        ("ADMIN_SECRET".to_owned(), ADMIN.to_owned()),
        ("AUTH0_SECRET".to_owned(), AUTH0.to_owned()),
    ]))
}

fn config(idp: &FakeIdp, state: &str) -> String {
    format!(
        "
server:
  drain_seconds: 0
providers:
  - name: test-idp
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
    algorithms: [ES256]
    dpop: {{mode: optional, algorithms: [ES256]}}
revocation:
  admin_secret: {{env: ADMIN_SECRET}}
  auth0_log_stream_secret: {{env: AUTH0_SECRET}}
{state}
",
        iss = idp.issuer
    )
}

fn sentinel_state(setup: &SentinelSetup) -> String {
    format!(
        "state: {{backend: redis, key_prefix: 'test:', sentinel: {{master_name: {}, urls: ['{}']}}}}",
        SentinelSetup::MASTER,
        setup.sentinel_url()
    )
}

fn cluster_state(setup: &ClusterSetup) -> String {
    let urls: Vec<String> = setup.urls().iter().map(|u| format!("'{u}'")).collect();
    format!(
        "state: {{backend: redis, key_prefix: 'test:', cluster: {{urls: [{}]}}}}",
        urls.join(", ")
    )
}

async fn server(idp: &FakeIdp, state: &str) -> TestServer {
    TestServer::start_with(&config(idp, state), secrets(), Clock::system())
        .await
        .ready()
        .await
}

/// A DPoP-bound request (`Authorization: DPoP <token>`, `DPoP: <proof>`).
async fn dpop(server: &TestServer, token: &str, proof: &str) -> CheckResponse {
    let authorization = format!("DPoP {token}");
    let mut req = request_to(
        "GET",
        "/api/items?x=1",
        &[("authorization", &authorization), ("dpop", proof)],
    );
    http_of(&mut req).scheme = "https".into();
    server.send(req).await
}

fn code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map_or(-1, |s| s.code)
}

fn reason(response: &CheckResponse) -> &str {
    response.status.as_ref().map_or("", |s| s.message.as_str())
}

/// Sends `proof` to `server` until it is answered other than UNAVAILABLE (no master), never allowed;
/// returns the answer's reason.
async fn answered(server: &TestServer, token: &str, proof: &str) -> String {
    let start = Instant::now();
    loop {
        let response = dpop(server, token, proof).await;
        assert_ne!(
            code(&response),
            0,
            "a replayed proof was allowed: {response:?}"
        );
        if code(&response) != 14 {
            return reason(&response).to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no master answers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token bound to `holder`'s key (`cnf.jkt`).
fn bound_token(key: &TestKey, idp: &FakeIdp, holder: &DpopHolder) -> String {
    let mut claims = claims(&idp.issuer, AUD);
    claims["cnf"] = json!({"jkt": holder.jkt()});
    key.token(&claims)
}

fn token(key: &TestKey, idp: &FakeIdp, sub: &str) -> String {
    let iat = now() - 60;
    key.token(&json!({"iss": idp.issuer, "aud": AUD, "sub": sub, "iat": iat, "exp": iat + 3600}))
}

fn allowed(response: &CheckResponse) -> bool {
    response.status.as_ref().map(|s| s.code) == Some(0)
}

/// POSTs a revocation of `sub`; 201 (shared) or 503 (applied here, written once Redis answers).
async fn revoke(server: &TestServer, sub: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/admin/revocations", server.admin))
        .bearer_auth(ADMIN)
        .json(&json!({"kind": "sub", "value": sub}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn auth0_batch(server: &TestServer, events: &[(&str, &str)]) -> (u16, Value) {
    let body: Vec<Value> = events
        .iter()
        .map(|(log_id, user)| {
            json!({"log_id": log_id, "data": {
                "type": "slo", "description": "", "client_id": "spa", "user_id": user, "details": {}}})
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("http://{}/events/auth0", server.admin))
        .bearer_auth(AUTH0)
        .header("content-type", "application/json")
        .body(Value::from(body).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `server` every 50 ms with `token` until it is denied as revoked; fails after `within`. Returns
/// how long it took.
async fn denied_within(server: &TestServer, token: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let response = server.check_bearer(token).await;
        if !allowed(&response) {
            assert_invalid_token(&response, "revoked");
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still allowed after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the first sample of `/metrics` whose line starts with `series`.
async fn sample(server: &TestServer, series: &str) -> Option<f64> {
    server
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_revocations_and_replay_protection() {
    let mut setup = SentinelSetup::start();
    let state = sentinel_state(&setup);
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k1");
    idp.set_keys(&[&key]);
    let a = server(&idp, &state).await;
    let b = server(&idp, &state).await;
    let holder = DpopHolder::new("holder");
    let bound = bound_token(&key, &idp, &holder);
    let first_master = setup.master.port();
    let master_info = |port: u16| {
        format!("portcullis_state_redis_info{{mode=\"sentinel\",master=\"127.0.0.1:{port}\"}} 1")
    };
    assert!(
        a.metrics().await.contains(&master_info(first_master)),
        "the master is asked of the sentinel"
    );

    // Before the failover: a revocation through A reaches a token cached on B; a DPoP proof is used.
    let alice = token(&key, &idp, "alice");
    assert!(allowed(&b.check_bearer(&alice).await));
    assert_eq!(revoke(&a, "alice").await, 201);
    denied_within(&b, &alice, BOUND).await;
    let proof = holder.proof("GET", URI, &bound);
    ok(&dpop(&a, &bound, &proof).await);
    assert_eq!(
        reason(&dpop(&b, &bound, &proof).await),
        "dpop_proof_replayed"
    );
    setup.replicated();

    // The master dies. Until the sentinel promotes the replica, no master answers: a DPoP check answers
    // the error (never an allow), a revocation posted to A applies there and is kept.
    setup.master.stop();
    let fresh = dpop(&a, &bound, &holder.proof("GET", URI, &bound)).await;
    assert_eq!(
        code(&fresh),
        14,
        "UNAVAILABLE without a master, never an allow: {fresh:?}"
    );
    assert_eq!(reason(&fresh), "dpop_replay_unavailable");
    let carol = token(&key, &idp, "carol");
    assert!(allowed(&b.check_bearer(&carol).await));
    assert!(matches!(revoke(&a, "carol").await, 201 | 503));
    assert!(!allowed(&a.check_bearer(&carol).await));
    setup.fail_over();
    let second_master = setup.replica.port();
    assert_ne!(second_master, first_master);

    // After the failover: what A kept reaches B, a revocation posted to B reaches A, and the one from
    // before the failover still holds on both.
    denied_within(&b, &carol, Duration::from_secs(20)).await;
    let dave = token(&key, &idp, "dave");
    assert!(allowed(&a.check_bearer(&dave).await));
    let start = Instant::now();
    while revoke(&b, "dave").await != 201 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "B never found the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    denied_within(&a, &dave, BOUND).await;
    for server in [&a, &b] {
        assert!(!allowed(&server.check_bearer(&alice).await));
    }

    // The proof used before the failover is refused after it, on both; never accepted meanwhile. A fresh
    // proof works again.
    for server in [&a, &b] {
        assert_eq!(
            answered(server, &bound, &proof).await,
            "dpop_proof_replayed"
        );
    }
    ok(&dpop(&b, &bound, &holder.proof("GET", URI, &bound)).await);

    // The metrics show the new master and the failover.
    let start = Instant::now();
    loop {
        let metrics = a.metrics().await;
        if metrics.contains(&master_info(second_master))
            && sample(&a, "portcullis_state_failovers_total").await >= Some(1.0)
        {
            break;
        }
        assert!(start.elapsed() < BOUND, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shares_revocations_auth0_events_and_replay_protection() {
    let cluster = ClusterSetup::start();
    let state = cluster_state(&cluster);
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k1");
    idp.set_keys(&[&key]);
    let a = server(&idp, &state).await;
    let b = server(&idp, &state).await;

    // Through either replica, a revocation reaches a token cached on the other.
    let alice = token(&key, &idp, "alice");
    let bob = token(&key, &idp, "bob");
    assert!(allowed(&b.check_bearer(&alice).await) && allowed(&a.check_bearer(&bob).await));
    assert_eq!(revoke(&a, "alice").await, 201);
    denied_within(&b, &alice, BOUND).await;
    assert_eq!(revoke(&b, "bob").await, 201);
    denied_within(&a, &bob, BOUND).await;

    // An Auth0 log stream event through B reaches A; redelivered to A, it is known.
    let carol = token(&key, &idp, "carol");
    assert!(allowed(&a.check_bearer(&carol).await));
    let (status, answer) = auth0_batch(&b, &[("90020192", "carol")]).await;
    assert_eq!(
        (status, answer["revoked"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    denied_within(&a, &carol, BOUND).await;
    let (status, answer) = auth0_batch(&a, &[("90020192", "carol")]).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    // The denylist's keys share one slot (the key prefix in a hash tag), and the records of DPoP proofs
    // are spread over the cluster: replays are caught across replicas whichever node holds them.
    let holder = DpopHolder::new("holder");
    let bound = bound_token(&key, &idp, &holder);
    for i in 0..12 {
        let proof = holder.proof("GET", URI, &bound);
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        ok(&dpop(first, &bound, &proof).await);
        assert_eq!(
            reason(&dpop(second, &bound, &proof).await),
            "dpop_proof_replayed",
            "proof {i}"
        );
        assert_eq!(
            reason(&dpop(first, &bound, &proof).await),
            "dpop_proof_replayed",
            "proof {i}"
        );
    }
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["--scan", "--pattern", "test:dpop:*"]))
        .collect();
    assert!(
        keys.iter().filter(|k| !k.trim().is_empty()).count() >= 2,
        "proof records on one node only: {keys:?}"
    );
    let slot = |key: &str| cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]);
    assert_eq!(slot("{test:}revocations"), slot("{test:}feed"));
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("portcullis_state_redis_info{mode=\"cluster\",master=\"127.0.0.1:"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follows_the_denylist_slot_to_another_node() {
    let cluster = ClusterSetup::start();
    // A resync every second, so the metrics notice the new node soon (the feed itself follows MOVED).
    let state = cluster_state(&cluster).replace("key_prefix:", "resync_seconds: 1, key_prefix:");
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k1");
    idp.set_keys(&[&key]);
    let a = server(&idp, &state).await;
    let b = server(&idp, &state).await;
    let alice = token(&key, &idp, "alice");
    assert!(allowed(&b.check_bearer(&alice).await));
    assert_eq!(revoke(&a, "alice").await, 201);
    denied_within(&b, &alice, BOUND).await;

    // The slot of the denylist moves, keys and all, to another node: the replicas are redirected.
    let (from, _) = cluster.owner("{test:}revocations");
    let to = (from + 1) % cluster.nodes.len();
    cluster.move_slot_of("{test:}revocations", to);
    let moved_to = format!(
        "portcullis_state_redis_info{{mode=\"cluster\",master=\"{}\"}} 1",
        cluster.nodes[to].addr
    );

    let bob = token(&key, &idp, "bob");
    assert!(allowed(&a.check_bearer(&bob).await));
    let start = Instant::now();
    while revoke(&b, "bob").await != 201 {
        assert!(start.elapsed() < BOUND, "B's write never followed the slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    denied_within(&a, &bob, BOUND).await;
    for server in [&a, &b] {
        assert!(
            !allowed(&server.check_bearer(&alice).await),
            "the entry moved with its slot"
        );
    }
    let start = Instant::now();
    loop {
        let metrics = a.metrics().await;
        if metrics.contains(&moved_to)
            && sample(&a, "portcullis_state_failovers_total").await >= Some(1.0)
        {
            break;
        }
        assert!(start.elapsed() < BOUND, "{moved_to} not in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_catches_up_within_a_second_of_its_link_returning() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr).await;
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k1");
    idp.set_keys(&[&key]);
    // resync_seconds is left at its default, 30.
    let state =
        |url: String| format!("state: {{backend: redis, key_prefix: 'test:', url: '{url}'}}");
    let a = server(&idp, &state(redis.url())).await;
    let b = server(&idp, &state(relay.url())).await;

    let alice = token(&key, &idp, "alice");
    assert!(allowed(&b.check_bearer(&alice).await));
    let catch_ups = sample(&b, "portcullis_state_catch_ups_total").await;

    // B is cut off; meanwhile, a revocation through A.
    relay.cut();
    let start = Instant::now();
    while !b
        .metrics()
        .await
        .contains("portcullis_state_up{backend=\"redis\"} 0")
    {
        assert!(start.elapsed() < BOUND, "B never noticed the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(revoke(&a, "alice").await, 201);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        allowed(&b.check_bearer(&alice).await),
        "B cannot know yet: the relay is cut"
    );

    // The link is back: B denies the token at once (within 1 s; the bound here allows for a loaded
    // machine and is far below the 30 s resync).
    relay.restore();
    let took = denied_within(&b, &alice, BOUND).await;
    eprintln!("caught up {took:?} after the link returned");
    let after = sample(&b, "portcullis_state_catch_ups_total").await;
    assert!(after > catch_ups, "{catch_ups:?} -> {after:?}");
    assert!(sample(&b, "portcullis_state_feed_lag_seconds").await < Some(5.0));
}
