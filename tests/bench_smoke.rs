//! `portcullis bench` runs for about a second against the portcullis and no-op servers it starts, and
//! reports every decision right. (The benchmarks themselves are not part of the test command.)

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn bench(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN)
        .arg("bench")
        .args([
            "--json",
            "--rounds",
            "1",
            "--warmup",
            "0.2",
            "--duration",
            "1",
        ])
        .args([
            "--connections",
            "1",
            "--streams",
            "4",
            "--distinct-tokens",
            "8",
        ])
        .args(["--bad-tokens", "50"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench printed no JSON ({e}); stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn median(json: &Value, server: &str, key: &str) -> f64 {
    json["servers"][server]["median"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {server} {key} in {json:#}"))
}

#[test]
fn a_closed_loop_mix_gets_every_decision_right_beside_the_noop_server() {
    let (code, json, stderr) = bench(&["--mix", "hot=60,distinct=20,bad=10,none=10"]);
    assert_eq!(code, 0, "{stderr}\n{json:#}");
    let pc = &json["servers"]["portcullis"];
    assert_eq!(pc["mismatches"], 0, "{json:#}");
    assert_eq!(pc["errors"], 0, "{json:#}");
    for class in ["hot", "distinct", "bad", "none"] {
        assert!(
            median(&json, "portcullis", &format!("{class}_requests")) > 0.0,
            "{class}"
        );
    }
    assert!(median(&json, "portcullis", "requests_per_s") > 0.0);
    assert!(median(&json, "noop", "requests_per_s") > 0.0);
    assert_eq!(json["servers"]["noop"]["errors"], 0);
    assert!(median(&json, "portcullis", "server_cpu_s_per_1000") >= 0.0);
    assert!(median(&json, "portcullis", "p99_us") >= median(&json, "portcullis", "p50_us"));
    let ratio = json["ratio_portcullis_to_noop"]["requests_per_s"]
        .as_f64()
        .unwrap();
    assert!(ratio > 0.0, "{json:#}");
}

#[test]
fn an_open_loop_beside_a_flood_keeps_its_rate_and_checks_the_flood_too() {
    let (code, json, stderr) = bench(&[
        "--rate",
        "200",
        "--flood-connections",
        "1",
        "--cache-entries",
        "0",
        "--no-noop",
    ]);
    assert_eq!(code, 0, "{stderr}\n{json:#}");
    assert_eq!(json["servers"]["portcullis"]["mismatches"], 0);
    assert!(json["servers"].get("noop").is_none());
    // 200 checks/s for 1 s: the open loop sends on schedule, whatever the flood does.
    let sent = median(&json, "portcullis", "requests");
    assert!((150.0..=210.0).contains(&sent), "{sent} in {json:#}");
    assert!(median(&json, "portcullis", "flood_requests") > 0.0);
    assert!(median(&json, "portcullis", "send_lag_p99_us") >= 0.0);
}

/// A server that allows everything (the no-op one, driven as a `--target`) is caught: bad and missing
/// tokens come back allowed, which are mismatches, and the exit code says so.
#[test]
fn wrong_decisions_are_counted_as_mismatches() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut noop = Command::new(BIN)
        .args(["bench", "--serve-noop", &addr.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = format!("http://{addr}");
    let (code, json, _) = bench(&["--target", &target, "--no-noop", "--mix", "hot=1,bad=1"]);
    let _ = noop.kill();
    let _ = noop.wait();
    assert_eq!(code, 2, "{json:#}");
    let mismatches = json["servers"]["target"]["mismatches"].as_u64().unwrap();
    let bad = median(&json, "target", "bad_requests");
    assert!(bad > 0.0);
    assert_eq!(
        mismatches as f64, bad,
        "every bad token was allowed: {json:#}"
    );
}

#[test]
fn one_run_drives_grpc_and_the_http_listener_over_http1_and_h2c() {
    let (code, json, stderr) = bench(&[
        "--transport",
        "grpc,http,h2c",
        "--mix",
        "hot=70,bad=15,none=15",
    ]);
    assert_eq!(code, 0, "{stderr}\n{json:#}");
    for server in ["portcullis-grpc", "portcullis-http", "portcullis-h2c"] {
        let pc = &json["servers"][server];
        assert_eq!(pc["mismatches"], 0, "{server}: {json:#}");
        assert_eq!(pc["errors"], 0, "{server}: {json:#}");
        for class in ["hot", "bad", "none"] {
            assert!(
                median(&json, server, &format!("{class}_requests")) > 0.0,
                "{server} {class}"
            );
        }
        assert!(
            json[format!("ratio_{server}_to_noop")]["requests_per_s"]
                .as_f64()
                .is_some_and(|r| r > 0.0),
            "{json:#}"
        );
    }
    assert_eq!(
        json["settings"]["transports"],
        serde_json::json!(["grpc", "http", "h2c"])
    );
}

/// `--scale` starts one server per case (here 1 and 200 routes, 1 and 20 issuers), drives each with the
/// cached token, and reports every case with its counts, rate, ratio, memory and readiness. No assertion
/// on a rate: only on what cannot flake.
#[test]
fn the_scale_mode_reports_every_case_with_its_memory_and_readiness() {
    let out = Command::new(BIN)
        .args(["bench", "--scale", "--json", "--rounds", "1"])
        .args(["--warmup", "0.1", "--duration", "0.5"])
        .args(["--connections", "1", "--streams", "2"])
        .args(["--scale-routes", "1,200", "--scale-issuers", "1,20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench --scale printed no JSON ({e}); stderr:\n{stderr}"));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{json:#}");
    let cases = json["cases"].as_array().expect("a list of cases");
    let shape: Vec<(u64, u64)> = cases
        .iter()
        .map(|c| {
            (
                c["routes"].as_u64().unwrap(),
                c["issuers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shape, [(1, 1), (200, 1), (1, 20)], "{json:#}");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        assert_eq!(case["errors"], 0, "{name}: {json:#}");
        assert_eq!(case["mismatches"], 0, "{name}: {json:#}");
        assert!(case["hot_requests"].as_u64().unwrap() > 0, "{name}");
        assert!(case["requests_per_s"].as_f64().unwrap() > 0.0, "{name}");
        assert!(case["ratio_to_baseline"].as_f64().unwrap() > 0.0, "{name}");
        let rss = case["rss_bytes"].as_u64().unwrap();
        let peak = case["peak_rss_bytes"].as_u64().unwrap();
        assert!(rss > 1 << 20 && peak >= rss, "{name}: {rss} {peak}");
        assert!(case["ready_s"].as_f64().unwrap() > 0.0, "{name}");
        assert_eq!(case["rounds"].as_array().unwrap().len(), 1, "{name}");
    }
    // The baseline is its own reference; memory per route and per issuer only where there are more.
    assert_eq!(cases[0]["ratio_to_baseline"], 1.0);
    assert!(cases[0]["rss_per_route_bytes"].is_null());
    assert!(cases[1]["rss_per_route_bytes"].is_number(), "{json:#}");
    assert!(cases[1]["rss_per_issuer_bytes"].is_null());
    assert!(cases[2]["rss_per_issuer_bytes"].is_number(), "{json:#}");
    assert!(
        cases[1]["config_bytes"].as_u64().unwrap() > cases[0]["config_bytes"].as_u64().unwrap()
    );
    assert_eq!(
        json["settings"]["scale_routes"],
        serde_json::json!([1, 200])
    );
}
