//! The `portcullis` binary as an operator uses it: `validate-config`, and the README's dev flow
//! (`serve --dev`, `token`, `check` and their exit codes, SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(
        &path,
        "providers:\n  - {name: auth0, type: jwt, issuer: 'https://example.eu.auth0.com/', audiences: ['https://api.example.com/']}\n",
    )
    .unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("valid (1 provider)"), "{stdout}");
}

#[test]
fn validate_config_lists_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "
server:
  listen: not-an-address
providers:
  - {name: a, type: jwt, issuer: 'https://a/', audiences: [x]}
  - {name: b, type: jwt, issuer: 'https://b/', audiences: []}
  - {name: c, type: jwt, issuer: 'https://c/', audiences: [x], colour: red}
",
    )
    .unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stdout}");
    assert!(stdout.contains("invalid configuration"), "{stdout}");
    assert!(stdout.contains("  server.listen: "), "{stdout}");
    assert!(
        stdout.contains("  providers[1].audiences: must not be empty"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  providers[2].colour: unknown field"),
        "{stdout}"
    );
}

#[test]
fn validate_config_checks_secret_references_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.yaml");
    std::fs::write(
        &path,
        "providers:\n  - {name: l, type: jwt, issuer: legacy, audiences: [x], algorithms: [HS256], shared_secret: {env: PORTCULLIS_TEST_UNSET_SECRET}}\n",
    )
    .unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains("providers[0].shared_secret: environment variable `PORTCULLIS_TEST_UNSET_SECRET` is not set"),
        "{stdout}"
    );
    let (code, _, _) = run(&["validate-config", "--skip-secrets", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, stdout, _) = run(&["validate-config", "/nonexistent/portcullis.yaml"]);
    assert_eq!(code, 64);
    assert!(stdout.contains("cannot read configuration"), "{stdout}");
}

#[test]
fn validate_config_checks_the_http_forward_auth_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.yaml");
    let providers =
        "providers:\n  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}\n";
    std::fs::write(
        &path,
        format!("server: {{http_listen: '127.0.0.1:9192', http_path_prefix: /auth}}\n{providers}"),
    )
    .unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains("server.http_mode: is required with server.http_listen"),
        "{stdout}"
    );
    assert!(
        stdout.contains("server.http_path_prefix: only applies to http_mode: envoy"),
        "{stdout}"
    );
    std::fs::write(
        &path,
        format!("server: {{http_listen: '127.0.0.1:9192', http_mode: envoy, http_path_prefix: /auth}}\n{providers}"),
    )
    .unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "providers: []\n").unwrap();
    let (code, _, stderr) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("providers: must list at least one provider"),
        "{stderr}"
    );
}

/// A `serve --dev` process on ports 0 with its own state directory, killed when the test ends whatever
/// happens. Its log lines (stderr, after the banner) are kept in `log`, its stdout (the decision log) in
/// `decisions`.
struct DevServer {
    child: Child,
    grpc: String,
    admin: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    decisions: std::sync::Arc<std::sync::Mutex<String>>,
    dir: tempfile::TempDir,
}

impl DevServer {
    fn start(env: &[(&str, &str)]) -> DevServer {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(&state)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let decisions = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&decisions);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        // The banner names the bound addresses.
        let mut lines = BufReader::new(stderr).lines();
        let (mut grpc, mut admin) = (String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        while grpc.is_empty() || admin.is_empty() {
            assert!(Instant::now() < deadline, "no banner");
            let line = lines.next().expect("server exited").unwrap();
            if let Some(rest) = line.trim().strip_prefix("gRPC Check:") {
                grpc = rest.trim().to_owned();
            }
            if let Some(rest) = line.trim().strip_prefix("admin:") {
                admin = rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        DevServer {
            child,
            grpc,
            admin,
            log,
            decisions,
            dir,
        }
    }

    /// Waits (at most 10 s) until `/readyz` answers 200.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("{}/readyz", self.admin),
                ])
                .output();
            if matches!(&out, Ok(o) if o.stdout == b"200") {
                return;
            }
            assert!(Instant::now() < deadline, "dev server never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The state directory, for `token --state-dir`.
    fn state(&self) -> String {
        self.dir.path().join("state").to_str().unwrap().to_owned()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_server_token_and_check_work_together() {
    let mut dev = DevServer::start(&[("RUST_LOG", "debug")]);
    let (grpc, admin, log) = (
        dev.grpc.clone(),
        dev.admin.clone(),
        std::sync::Arc::clone(&dev.log),
    );
    let state = dev.state();
    let state = state.as_str();
    let addr = format!("http://{grpc}");

    // Ready once it has fetched its own key set from the admin port.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{admin}/readyz"),
            ])
            .output();
        if matches!(&out, Ok(o) if o.stdout == b"200") {
            break;
        }
        assert!(Instant::now() < deadline, "dev server never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, token, stderr) = run(&[
        "token",
        "--sub",
        "alice",
        "--scope",
        "read:x write:x",
        "--state-dir",
        state,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3);

    let auth = format!("authorization: Bearer {token}");
    let (code, stdout, stderr) = run(&[
        "check",
        "--addr",
        &addr,
        "--header",
        &auth,
        "--header",
        "x-auth-subject: mallory",
        "--path",
        "/x?y=1",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["decision"], "allowed");
    let added = answer["headers_added"].as_array().unwrap();
    assert!(added
        .iter()
        .any(|h| h["name"] == "x-auth-subject" && h["value"] == "alice"));
    assert!(added
        .iter()
        .any(|h| h["name"] == "x-auth-scopes" && h["value"] == "read:x write:x"));

    let (code, stdout, _) = run(&["check", "--addr", &addr]);
    assert_eq!(code, 3, "denied: {stdout}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["status"], 401);

    // --expect (what the chart's `helm test` runs): 0 for the expected answer, 5 for another, and the
    // answer is still printed.
    for (expect, want) in [("denied", 0), ("decided", 0), ("allowed", 5)] {
        let (code, stdout, stderr) = run(&["check", "--addr", &addr, "--expect", expect]);
        assert_eq!(code, want, "--expect {expect}: {stdout}{stderr}");
        assert!(stdout.contains("\"status\": 401"), "{stdout}");
    }
    let (code, stdout, stderr) = run(&[
        "check", "--addr", &addr, "--header", &auth, "--expect", "denied",
    ]);
    assert_eq!(code, 5, "allowed is not denied: {stdout}{stderr}");

    // --ready and --expect-error (what the chart's `helm test` runs): a forged token (a valid token's
    // header and claims, another signature) is refused by the provider as `invalid_token`, which a
    // missing credential (`unauthorized`) is not.
    let forged = format!("{}.AAAA", token.rsplit_once('.').unwrap().0);
    let forged = format!("authorization: Bearer {forged}");
    let helm_test = |header: &str, error: &str| {
        let mut args = vec!["check", "--addr", &addr, "--ready", "--expect", "denied"];
        args.extend(["--expect-error", error]);
        if !header.is_empty() {
            args.extend(["--header", header]);
        }
        run(&args)
    };
    let (code, stdout, stderr) = helm_test(&forged, "invalid_token");
    assert_eq!(code, 0, "a forged token is invalid_token: {stdout}{stderr}");
    let (code, stdout, stderr) = helm_test("", "invalid_token");
    assert_eq!(
        code, 5,
        "no credential is not invalid_token: {stdout}{stderr}"
    );
    let (code, stdout, stderr) = helm_test(&auth, "invalid_token");
    assert_eq!(code, 5, "an allow is not a denial: {stdout}{stderr}");
    let (code, _, stderr) = run(&["check", "--addr", "http://127.0.0.1:1", "--ready"]);
    assert_eq!(code, 1, "--ready without a server: {stderr}");

    let wrong_aud = run(&["token", "--aud", "someone-else", "--state-dir", state]).1;
    let (code, stdout, _) = run(&[
        "check",
        "--addr",
        &addr,
        "--header",
        &format!("authorization: Bearer {}", wrong_aud.trim()),
    ]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("invalid_token"), "{stdout}");

    // Every decision was logged (debug level here), and no token or part of one ever was.
    std::thread::sleep(Duration::from_millis(200));
    let logged = log.lock().unwrap().clone();
    assert!(
        logged.contains("authz.decision"),
        "decisions are logged: {logged}"
    );
    for secret in [token, wrong_aud.trim()] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!logged.contains(signature), "a token signature was logged");
        assert!(
            !logged.contains(secret.split('.').nth(1).unwrap()),
            "a token payload was logged"
        );
    }

    // Could not ask: nothing listens there.
    let (code, _, stderr) = run(&["check", "--addr", "http://127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = run(&[
        "check",
        "--addr",
        "http://127.0.0.1:1",
        "--expect",
        "decided",
    ]);
    assert_eq!(code, 1, "no answer is never the expected one: {stderr}");

    // SIGTERM: a clean exit.
    let status = dev.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn every_example_is_a_valid_config() {
    for name in [
        "auth0-trading.yaml",
        "research-platform.yaml",
        "service-to-service.yaml",
        "agent-platform.yaml",
    ] {
        let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let (code, stdout, _) = run(&["validate-config", &path]);
        assert_eq!(code, 0, "{name}: {stdout}");
    }
}

#[test]
fn explain_evaluates_offline_with_a_local_key_set() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::TestKey::rsa("k1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let mut claims = common::claims("https://example.eu.auth0.com/", "https://api.example.com/");
    claims["sub"] = serde_json::json!("auth0|alice");
    claims["permissions"] = serde_json::json!(["read:portfolio"]);
    let token = key.token(&claims);
    let config = format!("{}/examples/auth0-trading.yaml", env!("CARGO_MANIFEST_DIR"));
    let auth = format!("authorization: Bearer {token}");
    let explain = |method: &str, path: &str| {
        run(&[
            "explain",
            "--config",
            &config,
            "--jwks",
            jwks.to_str().unwrap(),
            "--header",
            &auth,
            "--method",
            method,
            "--path",
            path,
        ])
    };

    let (code, stdout, stderr) = explain("POST", "/v1/kill-switch");
    assert_eq!(code, 3, "denied: {stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["status"], 403);
    let explanation = &answer["explanation"];
    assert_eq!(explanation["route"]["route"], "kill-switch");
    assert_eq!(explanation["reason"], "missing_permission");
    assert_eq!(explanation["principal"], "auth0|alice");
    assert_eq!(explanation["providers"][0]["provider"], "auth0");
    assert!(
        explanation["requirements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["passed"] == false),
        "{explanation}"
    );
    let tried = explanation["route"]["tried"].as_array().unwrap();
    assert_eq!(tried.last().unwrap()["route"], "kill-switch");
    assert!(
        tried.len() >= 2,
        "the routes before it were tried and did not match: {tried:?}"
    );

    let (code, stdout, _) = explain("GET", "/v1/portfolio/positions");
    assert_eq!(code, 0, "{stdout}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["explanation"]["route"]["route"], "read-portfolio");
}

#[test]
fn traces_are_exported_over_otlp_inside_envoys_trace() {
    use std::sync::{Arc, Mutex};
    // A fake OTLP/HTTP collector on loopback that keeps what it receives.
    /// Each export: its content type and body.
    type Exports = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let received: Exports = Arc::default();
    let sink = Arc::clone(&received);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let collector = listener.local_addr().unwrap();
    rt.spawn(async move {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let sink = Arc::clone(&sink);
                    async move {
                        let kind = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        sink.lock().unwrap().push((kind, body.to_vec()));
                        ""
                    }
                },
            ),
        );
        axum::serve(listener, app).await.unwrap();
    });

    let endpoint = format!("http://{collector}");
    let mut dev = DevServer::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "portcullis-test"),
    ]);
    let grpc = dev.grpc.clone();

    let traceparent = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Denied (no token) is fine: every Check is a span. Retry until the server answers.
        let (code, _, _) = run(&[
            "check",
            "--addr",
            &format!("http://{grpc}"),
            "--header",
            traceparent,
        ]);
        if code == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the dev server never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM flushes the spans still buffered.
    dev.terminate();

    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "no OTLP export reached the collector");
    let trace_id: Vec<u8> = (0..16)
        .map(|i| {
            u8::from_str_radix(&"4bf92f3577b34da6a3ce929d0e0e4736"[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    let found = received.iter().any(|(kind, body)| {
        kind == "application/x-protobuf"
            && body.windows(15).any(|w| w == b"ext_authz Check")
            && body.windows(16).any(|w| w == trace_id.as_slice())
            && body.windows(15).any(|w| w == b"portcullis-test")
    });
    assert!(
        found,
        "no exported span named `ext_authz Check` in Envoy's trace from service portcullis-test"
    );
}

#[test]
fn validate_config_checks_the_ext_authz_timeout_against_the_providers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeouts.yaml");
    let config = |ms: u64| {
        format!(
            "server: {{ext_authz_timeout_ms: {ms}}}\nproviders:\n  - {{name: a, type: jwt, issuer: 'https://a/', audiences: [x], jwks: {{timeout_seconds: 5}}}}\n"
        )
    };
    std::fs::write(&path, config(6000)).unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    std::fs::write(&path, config(5000)).unwrap();
    let (code, stdout, _) = run(&["validate-config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains("  providers[0].jwks.timeout_seconds: 5 s must be below server.ext_authz_timeout_ms (5000 ms)"),
        "{stdout}"
    );
}

/// `serve` writes the decision log as JSON lines on stdout, apart from its stderr log, and
/// `RUST_LOG=...,portcullis::decision=off` silences it.
#[test]
fn serve_writes_decision_lines_on_stdout_and_rust_log_turns_them_off() {
    let dev = DevServer::start(&[("RUST_LOG", "info")]);
    dev.wait_ready();
    let addr = format!("http://{}", dev.grpc);
    let (_, stdout, stderr) = run(&["check", "--addr", &addr, "--path", "/x"]);
    assert!(stdout.contains("\"denied\""), "{stdout}{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = dev.decisions.lock().unwrap().clone();
        if let Some(line) = text.lines().next() {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no decision line on stdout");
        std::thread::sleep(Duration::from_millis(50));
    };
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "portcullis::decision", "{line}");
    assert_eq!(entry["decision"], "deny", "{line}");
    assert_eq!(entry["reason"], "missing_credential", "{line}");
    assert_eq!(entry["route"], "default", "{line}");
    assert!(
        !dev.log.lock().unwrap().contains("portcullis::decision"),
        "decision lines stay off stderr"
    );
    drop(dev);

    let quiet = DevServer::start(&[("RUST_LOG", "info,portcullis::decision=off")]);
    quiet.wait_ready();
    let addr = format!("http://{}", quiet.grpc);
    let (_, stdout, stderr) = run(&["check", "--addr", &addr, "--path", "/x"]);
    assert!(stdout.contains("\"denied\""), "{stdout}{stderr}");
    // The check's own log line (stderr, info) shows it was decided; stdout stays empty.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !quiet.log.lock().unwrap().contains("missing_credential") {
        assert!(
            Instant::now() < deadline,
            "the denial was never logged on stderr"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(quiet.decisions.lock().unwrap().as_str(), "");
}
