//! The `portcullis` binary as an operator uses it: `validate-config`, the README's dev flow (`serve --dev`,
//! `token`, `check` and their exit codes, SIGTERM), and the first-run traps a new user meets (no dev state,
//! a token for an example's provider, a URL without a scheme, a disabled admin API, a debug-build bench).

use portcullis_test as common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    finish(&mut command)
}

/// Runs `command` to its end: exit code, stdout, stderr.
fn finish(command: &mut Command) -> (i32, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary with `args`, in `dir`, with none of the environment variables that point it at state or
/// secrets (the test's own environment must not decide its outcome).
fn command_in(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PORTCULLIS_DEV_STATE")
        .env_remove("PORTCULLIS_ADMIN_SECRET");
    command
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

/// A bad enum value, a duplicate provider, two bad routes (a type error, an unknown provider) and a
/// missing `jwks_file`: one file, all five problems.
const FIVE_PROBLEMS: &str = "
mode: enforcing
providers:
  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [x], jwks_file: MISSING}
  - {name: a, type: jwt, issuer: 'https://b.example/', audiences: [x], jwks_uri: 'https://b.example/jwks'}
routes:
  - {name: r1, match: {path: /x, methods: GET}}
  - {name: r2, match: {path: /y}, providers: [nobody]}
";

/// The five problems of [`FIVE_PROBLEMS`]: path and the start of the message.
fn five_problems_expected(missing: &str) -> Vec<(String, String)> {
    [
        (
            "providers[1].name",
            "duplicate provider name `a`".to_owned(),
        ),
        (
            "mode",
            "unknown variant `enforcing`, expected `enforce` or `permissive`".to_owned(),
        ),
        (
            "routes[0].match.methods",
            "invalid type: string \"GET\", expected a sequence".to_owned(),
        ),
        (
            "routes[1].providers[0]",
            "unknown provider `nobody`".to_owned(),
        ),
        ("providers[0].jwks_file", format!("cannot read `{missing}`")),
    ]
    .into_iter()
    .map(|(path, message)| (path.to_owned(), message))
    .collect()
}

fn assert_five_problems(found: &[(String, String)], missing: &str) {
    let expected = five_problems_expected(missing);
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (path, message) in &expected {
        assert!(
            found
                .iter()
                .any(|(p, m)| p == path && m.starts_with(message.as_str())),
            "no `{path}: {message}…` in {found:#?}"
        );
    }
}

#[test]
fn validate_config_and_serve_report_every_problem_of_a_file_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("keys/jwks.json");
    let missing = missing.to_str().unwrap();
    let path = dir.path().join("five.yaml");
    std::fs::write(&path, FIVE_PROBLEMS.replace("MISSING", missing)).unwrap();
    let file = path.to_str().unwrap();

    let (code, stdout, _) = run(&["validate-config", "--format", "json", file]);
    assert_eq!(code, 64, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let found: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let text = |key: &str| p[key].as_str().unwrap().to_owned();
            (text("path"), text("message"))
        })
        .collect();
    assert_five_problems(&found, missing);

    // `serve` refuses the file with the same list, before it binds anything.
    let (code, _, stderr) = run(&[
        "serve",
        "--config",
        file,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 64, "{stderr}");
    let found: Vec<(String, String)> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("  ")?.split_once(": "))
        .map(|(path, message)| (path.to_owned(), message.to_owned()))
        .collect();
    assert_five_problems(&found, missing);
}

/// The listener's own certificate is read in the same run as the rest: a bad enum value does not hide
/// a missing `server.tls` file (nor does it stop `serve` before it is read).
#[test]
fn a_missing_listener_certificate_is_reported_with_the_other_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.yaml");
    let cert = dir.path().join("missing-cert.pem");
    let key = dir.path().join("missing-key.pem");
    std::fs::write(
        &path,
        format!(
            "mode: enforcing
server: {{tls: {{cert_file: '{}', key_file: '{}'}}}}
providers:
  - {{name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}}
",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let file = path.to_str().unwrap();
    for args in [
        vec!["validate-config", file],
        vec![
            "serve",
            "--config",
            file,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    ] {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 64, "{args:?}: {stdout}{stderr}");
        let text = format!("{stdout}{stderr}");
        assert!(
            text.contains("  mode: unknown variant `enforcing`"),
            "{args:?}: {text}"
        );
        assert!(
            text.contains("  server.tls.cert_file: "),
            "{args:?}: {text}"
        );
    }
    // --skip-secrets reads no file: the enum is the only problem.
    let (code, stdout, _) = run(&["validate-config", "--skip-secrets", file]);
    assert_eq!(code, 64);
    assert!(!stdout.contains("server.tls"), "{stdout}");
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

    // --write-jwks writes the key set the dev server serves (for `explain --jwks`).
    let jwks = dev.dir.path().join("dev-jwks.json");
    let (code, _, stderr) = run(&[
        "token",
        "--state-dir",
        state,
        "--write-jwks",
        jwks.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let served = Command::new("curl")
        .args(["-s", &format!("{admin}/dev/jwks.json")])
        .output()
        .unwrap();
    let served: serde_json::Value = serde_json::from_slice(&served.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&jwks).unwrap()).unwrap();
    assert_eq!(written, served);

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
    let dir = format!("{}/examples", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in [
        "agent-platform.yaml",
        "auth0-trading.yaml",
        "dev.yaml",
        "research-platform.yaml",
        "service-to-service.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} is missing: {names:?}"
        );
    }
    for name in &names {
        let path = format!("{dir}/{name}");
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
    assert_eq!(entry["authz.decision"], "deny", "{line}");
    assert_eq!(entry["authz.reason"], "missing_credential", "{line}");
    assert_eq!(entry["authz.route"], "default", "{line}");
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

#[test]
fn explain_exits_64_on_a_configuration_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "providers: []\n").unwrap();
    let (code, _, stderr) = run(&["explain", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = run(&[
        "explain",
        "--config",
        &format!("{}/examples/dev.yaml", env!("CARGO_MANIFEST_DIR")),
        "--header",
        "no colon",
    ]);
    assert_eq!(code, 1, "a request that cannot be built: {stderr}");
    assert!(stderr.contains("is not `name: value`"), "{stderr}");
}

/// Run anywhere but the dev server's directory, `token` used to make a key of its own and mint tokens the
/// dev server refuses (`unknown_kid`). It makes nothing and says where the state is and how to point at it.
#[test]
fn token_never_creates_dev_state_and_says_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = finish(&mut command_in(dir.path(), &["token", "--sub", "alice"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout, "", "no token");
    assert!(
        !dir.path().join(".portcullis-dev").exists(),
        "token made the default state directory"
    );
    for hint in [
        ".portcullis-dev",
        "--state-dir",
        "PORTCULLIS_DEV_STATE",
        "serve --dev",
    ] {
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }

    let elsewhere = dir.path().join("state");
    let (code, _, stderr) = finish(&mut command_in(
        dir.path(),
        &["token", "--state-dir", elsewhere.to_str().unwrap()],
    ));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no dev server state in `{}`", elsewhere.display())),
        "{stderr}"
    );
    assert!(!elsewhere.exists(), "token made --state-dir");

    let (code, _, stderr) =
        finish(command_in(dir.path(), &["token"]).env("PORTCULLIS_DEV_STATE", &elsewhere));
    assert_eq!(code, 1, "{stderr}");
    assert!(!elsewhere.exists(), "token made PORTCULLIS_DEV_STATE");
}

/// `--claim iss=…` (and the other claims a flag sets) used to be dropped without a word.
#[test]
fn token_refuses_a_claim_its_flags_set() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let jwks = jwks.to_str().unwrap();
    for (claim, flag) in [
        ("iss=https://other.example/", "--iss"),
        ("sub=bob", "--sub"),
        ("aud=x", "--aud"),
        ("exp=1", "--ttl"),
    ] {
        let (code, stdout, stderr) = finish(&mut command_in(
            dir.path(),
            &[
                "token",
                "--iss",
                "https://example.eu.auth0.com/",
                "--aud",
                "https://api.example.com/",
                "--write-jwks",
                jwks,
                "--claim",
                claim,
            ],
        ));
        assert_eq!(code, 1, "--claim {claim}: {stdout}{stderr}");
        assert!(stderr.contains(&format!("use {flag}")), "{stderr}");
    }
    let (code, _, stderr) = finish(&mut command_in(
        dir.path(),
        &["token", "--scope", "a", "--claim", "scope=b"],
    ));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--scope both set `scope`"), "{stderr}");
    // The dev key is ES256: another algorithm needs --iss.
    let (code, _, stderr) = finish(&mut command_in(dir.path(), &["token", "--alg", "RS256"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("ES256") && stderr.contains("--iss"),
        "{stderr}"
    );
}

/// The shipped examples allow RS256 only and the dev key is ES256: `token --iss --alg RS256 --write-jwks`
/// mints for an example's provider, and `explain --jwks` decides with that key set.
#[test]
fn a_token_for_an_examples_provider_is_decided_by_explain() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let mint = |extra: &[&str]| {
        let mut args = vec![
            "token",
            "--iss",
            "https://example.eu.auth0.com/",
            "--aud",
            "https://api.example.com/",
            "--write-jwks",
            jwks,
        ];
        args.extend_from_slice(extra);
        let (code, token, stderr) = finish(&mut command_in(dir.path(), &args));
        assert_eq!(code, 0, "{extra:?}: {stderr}");
        token.trim().to_owned()
    };
    let config = format!("{}/examples/auth0-trading.yaml", env!("CARGO_MANIFEST_DIR"));
    let explain = |token: &str, method: &str, path: &str| {
        let (code, stdout, stderr) = run(&[
            "explain",
            "--config",
            &config,
            "--jwks",
            jwks,
            "--header",
            &format!("authorization: Bearer {token}"),
            "--method",
            method,
            "--path",
            path,
        ]);
        let answer: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|_| panic!("exit {code}: {stdout}{stderr}"));
        (code, answer)
    };

    let alice = mint(&[
        "--alg",
        "RS256",
        "--sub",
        "auth0|alice",
        "--permissions",
        "read:portfolio",
    ]);
    let header: serde_json::Value =
        serde_json::from_slice(&base64_url(alice.split('.').next().unwrap())).unwrap();
    assert_eq!(header["alg"], "RS256");
    // A second token adds its key to the same file; both verify.
    let bob = mint(&["--sub", "auth0|bob"]);
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(jwks).unwrap()).unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 2, "{set}");

    let (code, answer) = explain(&alice, "GET", "/v1/portfolio/positions");
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["decision"], "allowed");
    assert_eq!(answer["explanation"]["route"]["route"], "read-portfolio");
    assert_eq!(answer["explanation"]["principal"], "auth0|alice");

    let (code, answer) = explain(&bob, "GET", "/v1/portfolio/positions");
    assert_eq!(code, 3, "{answer}");
    assert_eq!(answer["explanation"]["reason"], "missing_permission");
    assert_eq!(answer["explanation"]["principal"], "auth0|bob");

    // The example allows RS256 only: the same issuer and audience signed ES256 is refused.
    let es256 = mint(&["--alg", "ES256", "--permissions", "read:portfolio"]);
    let (code, answer) = explain(&es256, "GET", "/v1/portfolio/positions");
    assert_eq!(code, 3, "{answer}");
    assert_eq!(answer["status"], 401, "{answer}");
}

/// `examples/dev.yaml` trusts the dev issuer's default identity (issuer, audience, ES256).
#[test]
fn the_dev_example_trusts_the_dev_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let (code, token, stderr) = finish(&mut command_in(
        dir.path(),
        &[
            "token",
            "--iss",
            "http://127.0.0.1:9002/dev",
            "--aud",
            "portcullis-dev",
            "--alg",
            "ES256",
            "--scope",
            "read:orders",
            "--write-jwks",
            jwks,
        ],
    ));
    assert_eq!(code, 0, "{stderr}");
    let config = format!("{}/examples/dev.yaml", env!("CARGO_MANIFEST_DIR"));
    let auth = format!("authorization: Bearer {}", token.trim());
    let explain = |method: &str| {
        run(&[
            "explain", "--config", &config, "--jwks", jwks, "--header", &auth, "--method", method,
            "--path", "/orders",
        ])
    };
    let (code, stdout, stderr) = explain("GET");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["explanation"]["route"]["route"], "read-orders");
    let (code, stdout, _) = explain("POST");
    assert_eq!(code, 3, "no write:orders: {stdout}");
    assert!(stdout.contains("insufficient_scope"), "{stdout}");
}

#[test]
fn check_says_the_url_scheme_is_missing() {
    let (code, _, stderr) = run(&["check", "--addr", "127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`127.0.0.1:1` has no scheme: write `http://127.0.0.1:1`"),
        "{stderr}"
    );
    assert!(!stderr.contains("transport error"), "{stderr}");
    let (code, _, stderr) = run(&["check", "--addr", "grpc://127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("must be http:// or https://"), "{stderr}");
}

/// The secret only from the environment: the command line shows in `ps` and in shell history.
#[test]
fn revoke_takes_its_secret_from_the_environment_only() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: each refusal below comes before any request.
    let args = ["revoke", "--admin", "http://127.0.0.1:1", "--sub", "alice"];
    let (code, _, stderr) = finish(
        command_in(dir.path(), &args)
            .args(["--secret", "s3cret"])
            .env("PORTCULLIS_ADMIN_SECRET", "s3cret"),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--secret is not accepted") && stderr.contains("PORTCULLIS_ADMIN_SECRET"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "the secret is not echoed");
    let (code, _, stderr) = finish(&mut command_in(dir.path(), &args));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("set PORTCULLIS_ADMIN_SECRET to the server's `revocation.admin_secret`"),
        "{stderr}"
    );
    let (_, stdout, _) = run(&["revoke", "--help"]);
    assert!(!stdout.contains("--secret"), "{stdout}");
}

/// A `serve --config` process on ports 0 with the admin API on; its admin address from its start line.
struct ConfigServer {
    child: Child,
    admin: String,
}

impl ConfigServer {
    fn start(config: &std::path::Path, env: &[(&str, &str)]) -> ConfigServer {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let admin = loop {
            let line = lines.next().expect("server exited").unwrap();
            if let Some((_, rest)) = line.split_once("admin.listen=") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        ConfigServer {
            child,
            admin: format!("http://{admin}"),
        }
    }
}

impl Drop for ConfigServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn revoke_reaches_the_admin_api_with_the_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (code, _, stderr) = finish(&mut command_in(
        dir.path(),
        &[
            "token",
            "--iss",
            "https://a.example/",
            "--aud",
            "x",
            "--write-jwks",
            jwks.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 0, "{stderr}");
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(
        &config,
        format!(
            "providers:\n  - {{name: a, type: jwt, issuer: 'https://a.example/', audiences: [x], jwks_file: '{}'}}\nrevocation: {{admin_secret: {{env: PORTCULLIS_TEST_ADMIN_SECRET}}}}\n",
            jwks.display()
        ),
    )
    .unwrap();
    let server = ConfigServer::start(&config, &[("PORTCULLIS_TEST_ADMIN_SECRET", "right")]);
    let revoke = |secret: &str, extra: &[&str]| {
        let mut args = vec!["revoke", "--admin", server.admin.as_str(), "--sub", "alice"];
        args.extend_from_slice(extra);
        finish(command_in(dir.path(), &args).env("PORTCULLIS_ADMIN_SECRET", secret))
    };
    let (code, stdout, stderr) = revoke("right", &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let entry: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(entry["kind"], "sub", "{entry}");
    let (code, _, stderr) = revoke("wrong", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refused the secret (401)"), "{stderr}");
    let (code, stdout, stderr) = revoke("right", &["--undo"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Nothing left to lift: the API's own 404, not "the API is off".
    let (code, stdout, stderr) = revoke("right", &["--undo"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("no such revocation"), "{stdout}");
    assert!(!stderr.contains("has no revocation API"), "{stderr}");
}

/// The dev server (like any server without `revocation.admin_secret`) has no admin API: its 404 is
/// explained.
#[test]
fn revoke_against_a_server_without_the_admin_api_says_so() {
    let dev = DevServer::start(&[]);
    let (code, _, stderr) = finish(
        command_in(
            dev.dir.path(),
            &["revoke", "--admin", &dev.admin, "--sub", "alice"],
        )
        .env("PORTCULLIS_ADMIN_SECRET", "anything"),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("has no revocation API (404)")
            && stderr.contains("`revocation.admin_secret`"),
        "{stderr}"
    );
}

/// A debug build's figures measure unoptimised code: `bench` says so on stderr, and how to build release.
#[test]
fn bench_on_a_debug_build_warns_that_its_figures_are_meaningless() {
    // `--rounds 0` is refused right after the warning, before anything is measured.
    let (code, _, stderr) = run(&["bench", "--rounds", "0"]);
    assert_eq!(code, 1, "{stderr}");
    let warned = stderr.contains("this is a debug build: its figures are meaningless")
        && stderr.contains("cargo build --release");
    assert_eq!(warned, cfg!(debug_assertions), "{stderr}");
}

/// base64url without padding, decoded.
fn base64_url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// Issue 27: shell completions and man pages come from the same clap definitions as `--help`.
#[test]
fn completions_and_man_pages_are_generated_from_the_command_line() {
    let (code, stdout, stderr) = run(&["completions", "bash"]);
    assert_eq!(code, 0, "{stderr}");
    for word in [
        "portcullis",
        "validate-config",
        "--state-dir",
        "--write-jwks",
    ] {
        assert!(
            stdout.contains(word),
            "{word} missing from the bash completions"
        );
    }
    let (code, stdout, _) = run(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("#compdef portcullis"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.lines().count() >= 10, "{stdout}");
    let top = std::fs::read_to_string(dir.path().join("portcullis.1")).unwrap();
    assert!(
        top.starts_with(".ie") || top.contains(".TH portcullis"),
        "{top}"
    );
    let check = std::fs::read_to_string(dir.path().join("portcullis-check.1")).unwrap();
    assert!(check.contains("expect"), "{check}");
}

/// Issue 27: `validate-config` reads the files `serve` reads (a missing `jwks_file` or CA file is a problem
/// here, not a failed start), reports as JSON with `--format json`, and fails on warnings with `--strict`.
#[test]
fn validate_config_reads_every_file_reports_json_and_fails_warnings_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("files.yaml");
    std::fs::write(
        &path,
        "providers:
  - {name: ok, type: jwt, issuer: 'https://a.example/', audiences: [x]}
  - {name: pinned, type: jwt, issuer: 'https://b.example/', audiences: [x], jwks_file: /nonexistent/jwks.json}
  - {name: hook, type: webhook, endpoint: 'https://hook.example/check', tls: {ca_file: /nonexistent/ca.pem}}
",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let (code, stdout, _) = run(&["validate-config", file]);
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains("providers[1].jwks_file: cannot read"),
        "{stdout}"
    );
    assert!(stdout.contains("providers[2].tls.ca_file"), "{stdout}");
    // Files that exist only where the server runs: skipped on request.
    let (code, _, _) = run(&["validate-config", "--skip-secrets", file]);
    assert_eq!(code, 0);

    let (code, stdout, _) = run(&["validate-config", "--format", "json", file]);
    assert_eq!(code, 64);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    let paths: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["providers[1].jwks_file", "providers[2].tls.ca_file"],
        "{report}"
    );

    // A warning (an envoy_jwt provider that takes any issuer): valid, unless --strict.
    let warned = dir.path().join("warned.yaml");
    std::fs::write(&warned, "providers:\n  - {name: edge, type: envoy_jwt}\n").unwrap();
    let warned = warned.to_str().unwrap();
    let (code, _, stderr) = run(&["validate-config", warned]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning:"), "{stderr}");
    let (code, stdout, _) = run(&["validate-config", "--strict", warned]);
    assert_eq!(code, 64, "{stdout}");
    let (code, stdout, _) = run(&["validate-config", "--strict", "--format", "json", warned]);
    assert_eq!(code, 64);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
    assert!(
        !report["warnings"].as_array().unwrap().is_empty(),
        "{report}"
    );
}
