//! `/metrics` after known traffic over real gRPC: exact check counts by decision, reason, route, provider
//! and transport; the latency histogram; cache and upstream counters; the in-flight gauge; build info;
//! and a scrape that parses line by line.

use portcullis_test as common;

use common::upstream::{FakeUpstream, Mode};
use common::*;
use serde_json::json;

const AUD: &str = "https://api.example.com/";

fn config(idp: &FakeIdp, up: &FakeUpstream) -> String {
    format!(
        "
server: {{drain_seconds: 0}}
providers:
  - name: people
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
  - name: opaque
    type: introspection
    endpoint: {endpoint}
    client_id: portcullis
    client_secret: {{env: INTROSPECTION_SECRET}}
    upstream: {{timeout_seconds: 1}}
routes:
  - name: api
    match: {{path_prefix: /api}}
  - name: admin
    match: {{path_prefix: /admin}}
    require:
      scopes: {{all_of: [admin]}}
",
        iss = idp.issuer,
        endpoint = up.url("/introspect"),
    )
}

/// The value of the one sample whose name and labels are exactly `series`, or 0 when absent.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .map(|v| v.parse::<f64>().unwrap())
        .next()
        .unwrap_or(0.0)
}

fn check_series(decision: &str, reason: &str, route: &str, provider: &str) -> String {
    format!("portcullis_checks_total{{decision=\"{decision}\",reason=\"{reason}\",route=\"{route}\",provider=\"{provider}\",transport=\"grpc\"}}")
}

#[tokio::test]
async fn metrics_count_known_traffic_by_route_provider_and_transport() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:opaque-ok",
        200,
        json!({"active": true, "sub": "svc", "scope": "read", "exp": now() + 600}),
    );
    let secrets = portcullis::io::sources_with(
        [("INTROSPECTION_SECRET".to_owned(), "s3cret".to_owned())].into(),
    );
    let server = TestServer::start_with(&config(&idp, &up), secrets, portcullis::Clock::system())
        .await
        .ready()
        .await;
    let token = key.token(&claims(&idp.issuer, AUD));
    let bearer = format!("Bearer {token}");
    let call = |path: &'static str, auth: Option<String>| {
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            server.send(request_to("GET", path, &headers)).await
        }
    };

    // Two allows with one JWT (the second from the token cache), on route `api`.
    ok(&call("/api/a", Some(bearer.clone())).await);
    ok(&call("/api/b", Some(bearer.clone())).await);
    // A deny with no credential, and one for a missing scope on `admin`.
    denied(&call("/api/a", None).await);
    denied(&call("/admin/x", Some(bearer.clone())).await);
    // An introspected allow (a cache miss, then a hit).
    ok(&call("/api/c", Some("Bearer opaque-ok".to_owned())).await);
    ok(&call("/api/c", Some("Bearer opaque-ok".to_owned())).await);
    // An upstream failure: an error answer.
    up.set_mode(Mode::Fail500);
    let failed = call("/api/d", Some("Bearer opaque-new".to_owned())).await;
    assert_eq!(failed.status.as_ref().unwrap().code, 14, "UNAVAILABLE");

    let metrics = server.metrics().await;
    let v = |s: &str| value(&metrics, s);
    assert_eq!(
        v(&check_series("allow", "", "api", "people")),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        v(&check_series("allow", "", "api", "opaque")),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        v(&check_series("deny", "missing_credential", "api", "")),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        v(&check_series("deny", "missing_scope", "admin", "people")),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        v(&check_series("error", "upstream_unavailable", "api", "")),
        1.0,
        "{metrics}"
    );

    // The histogram moved: 7 decisions, 4 of them allows.
    let count = |d: &str| {
        v(&format!(
            "portcullis_check_duration_seconds_count{{decision=\"{d}\"}}"
        ))
    };
    let sum = |d: &str| {
        v(&format!(
            "portcullis_check_duration_seconds_sum{{decision=\"{d}\"}}"
        ))
    };
    assert_eq!(count("allow"), 4.0, "{metrics}");
    assert_eq!(count("deny"), 2.0);
    assert_eq!(count("error"), 1.0);
    assert!(sum("allow") > 0.0 && sum("error") > 0.0, "{metrics}");
    assert_eq!(
        v("portcullis_check_duration_seconds_bucket{le=\"+Inf\",decision=\"allow\"}"),
        4.0,
        "{metrics}"
    );

    // Caches: the JWT was verified once and then found (the admin check found it too); the
    // introspection answer was fetched once and then found; the failed call is a miss.
    let cache = |m: &str, c: &str, p: &str| {
        v(&format!(
            "portcullis_cache_{m}_total{{cache=\"{c}\",provider=\"{p}\"}}"
        ))
    };
    assert_eq!(cache("misses", "token", ""), 1.0, "{metrics}");
    assert_eq!(cache("hits", "token", ""), 2.0, "{metrics}");
    assert_eq!(cache("misses", "introspection", "opaque"), 2.0, "{metrics}");
    assert_eq!(cache("hits", "introspection", "opaque"), 1.0, "{metrics}");
    assert_eq!(cache("evictions", "introspection", "opaque"), 0.0);

    // Upstream calls: two introspections, one failed; one key set fetch.
    assert_eq!(
        v("portcullis_upstream_duration_seconds_count{kind=\"introspection\",provider=\"opaque\"}"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        v("portcullis_upstream_failures_total{kind=\"introspection\",provider=\"opaque\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        v("portcullis_upstream_duration_seconds_count{kind=\"jwks\",provider=\"people\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        v("portcullis_jwks_fetches_total{provider=\"people\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        v("portcullis_jwks_fetches_total{provider=\"people\",result=\"failed\"}"),
        0.0
    );
    assert!(
        metrics
            .contains("\nportcullis_jwks_fetches_total{provider=\"people\",result=\"failed\"} 0\n"),
        "a failed-fetch series exists before the first failure: {metrics}"
    );

    // What is read at scrape time, and the rest.
    assert_eq!(v("portcullis_jwks_keys{provider=\"people\"}"), 1.0);
    assert_eq!(v("portcullis_token_cache_entries"), 1.0);
    assert_eq!(v("portcullis_ready"), 1.0);
    assert_eq!(v("portcullis_state_up{backend=\"memory\"}"), 1.0);
    assert_eq!(v("portcullis_revocations"), 0.0);
    assert!(metrics.contains("\nportcullis_redis_errors_total 0\n"));
    // In memory no Redis call is made, so none is recorded: no `redis` upstream series at all.
    assert!(!metrics.contains("kind=\"redis\""), "{metrics}");
    assert_eq!(v("portcullis_checks_in_flight"), 0.0, "{metrics}");
    assert!(
        metrics.contains(&format!(
            "\nportcullis_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    assert_eq!(
        v("portcullis_checks_rejected_total{reason=\"overloaded\",transport=\"grpc\"}"),
        0.0
    );

    assert_parses(&metrics);
}

/// Every line is a `# HELP`/`# TYPE`/`# UNIT` comment, `# EOF` (last), or `name{labels} value`, and every
/// sample's family was declared by a `# TYPE` line before it.
fn assert_parses(metrics: &str) {
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    let mut families: Vec<String> = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "info"].contains(&kind),
                "{line}"
            );
            families.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number in `{line}`"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in split_labels(labels) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                        "{line}"
                    );
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(
            (name.starts_with("portcullis_") || name.starts_with("process_"))
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        assert!(
            families.iter().any(|f| name == f
                || ["_total", "_info", "_count", "_sum", "_bucket"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f))),
            "sample of an undeclared family: {line}"
        );
    }
}

/// Splits `a="x",b="y,z"` at the commas between labels (not inside quoted values).
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

/// Issue 27: `/metrics` carries the process's own resources under the usual names, and no help text ends
/// in a doubled period (prometheus-client adds the period itself).
#[tokio::test]
async fn metrics_carry_process_resources() {
    let server = TestServer::start(
        "providers: [{name: anon, type: anonymous}]\ndefault_route: {allow_anonymous: true}",
    )
    .await
    .ready()
    .await;
    let metrics = server.metrics().await;
    for series in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_threads ",
        "process_start_time_seconds ",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing: {metrics}"));
        let value: f64 = line[series.len()..].trim().parse().unwrap();
        assert!(value > 0.0, "{line}");
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("# HELP") && l.ends_with("..")),
        "{metrics}"
    );
}
