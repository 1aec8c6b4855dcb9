//! `server.tls` on the gRPC Check listener: certificates made at test time (rcgen), a real server on
//! 127.0.0.1:0, and clients that do their own TLS handshake (so each test sees which certificate was
//! served and whether the server refused the client's).

use portcullis_test as common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tls::{write_file, TestCa};
use common::*;
use hyper_util::rt::TokioIo;
use portcullis::pb::auth::authorization_client::AuthorizationClient;
use portcullis::server::tls::ServerTls;
use portcullis::server::{self, App};
use portcullis::{Clock, Config};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const SECRET: &[u8] = b"tls-test-hs256-secret-0123456789abcdef";

/// The files of `server.tls`, in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(ca: &TestCa) -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write_server(&ca.server_pem());
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_server(&self, (cert, key): &(String, String)) {
        write_file(&self.path("tls.crt"), cert);
        write_file(&self.path("tls.key"), key);
    }

    fn write_client_ca(&self, ca: &TestCa) {
        write_file(&self.path("client-ca.pem"), ca.pem());
    }

    fn yaml(&self, client_ca: bool) -> String {
        self.yaml_with(client_ca, "")
    }

    /// The config, with `server` lines (indented by two) added to the server section.
    fn yaml_with(&self, client_ca: bool, server: &str) -> String {
        let ca = if client_ca {
            format!(
                ", client_ca_file: '{}'",
                self.path("client-ca.pem").display()
            )
        } else {
            String::new()
        };
        format!(
            "server:
  drain_seconds: 0
{server}  tls: {{cert_file: '{}', key_file: '{}'{ca}}}
providers:
  - name: internal
    type: jwt
    issuer: https://internal.example/
    audiences: [api]
    algorithms: [HS256]
    shared_secret: {{env: HS_SECRET}}
",
            self.path("tls.crt").display(),
            self.path("tls.key").display()
        )
    }
}

/// A portcullis serving Check over TLS on 127.0.0.1:0.
struct TlsServer {
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    /// The HTTP forward-auth listener, with `server.http_mode`.
    http: Option<std::net::SocketAddr>,
    tls: Arc<ServerTls>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn serve(yaml: &str, recheck: Duration) -> TlsServer {
    let config = Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{:?}", e.0));
    let secrets = portcullis::io::sources_with(
        [(
            "HS_SECRET".to_owned(),
            String::from_utf8(SECRET.to_vec()).unwrap(),
        )]
        .into(),
    );
    let tls = Arc::new(
        ServerTls::load(config.server.tls.as_ref().unwrap())
            .unwrap()
            .with_recheck(recheck),
    );
    let app = Arc::new(App::from_config(&config, None, secrets, Clock::system()).unwrap());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let http = match config.server.http_mode {
        Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        None => None,
    };
    let http_addr = http.as_ref().map(|l| l.local_addr().unwrap());
    tokio::spawn(server::run_with_tls(
        app,
        server::Listeners { grpc, admin, http },
        Some(Arc::clone(&tls)),
        async {
            let _ = rx.await;
        },
    ));
    TlsServer {
        addr,
        admin: admin_addr,
        http: http_addr,
        tls,
        _shutdown: tx,
    }
}

/// The value of a `/metrics` series (`name` with its labels, exactly).
async fn metric(server: &TlsServer, series: &str) -> i64 {
    let text = reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

fn not_after(pem: &str) -> i64 {
    let der = pem_der(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp()
}

fn token() -> String {
    let now = now();
    hs256_token(
        SECRET,
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        &serde_json::json!({"iss": "https://internal.example/", "aud": "api", "sub": "svc-1", "iat": now, "exp": now + 600}),
    )
}

/// A client trusting `server_ca`, presenting `client` (certificate and key PEM) when given.
fn client_config(server_ca: &TestCa, client: Option<&(String, String)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// What one TLS connection saw: the served leaf certificate (DER) and the Check's outcome.
struct Outcome {
    served: Vec<u8>,
    check: Result<portcullis::pb::auth::CheckResponse, String>,
}

/// Connects with `config`, then sends one authenticated Check over that connection.
async fn check_over_tls(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
) -> Result<Outcome, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "the server agrees on h2");
    let slot = Arc::new(Mutex::new(Some(TokioIo::new(stream))));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = slot.lock().unwrap().take();
            async move { stream.ok_or_else(|| std::io::Error::other("one connection only")) }
        }))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let auth = format!("Bearer {}", token());
    let check = tokio::time::timeout(
        Duration::from_secs(5),
        AuthorizationClient::new(channel).check(request(&[("authorization", &auth)])),
    )
    .await
    .map_err(|_| "Check timed out".to_owned())
    .and_then(|r| r.map(|r| r.into_inner()).map_err(|e| format!("Check: {e}")));
    Ok(Outcome { served, check })
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn check_over_tls_is_answered_and_plaintext_is_not() {
    let ca = TestCa::new("server CA");
    let files = Files::new(&ca);
    let server = serve(&files.yaml(false), Duration::from_secs(2)).await;

    let outcome = check_over_tls(server.addr, client_config(&ca, None))
        .await
        .unwrap();
    let response = outcome.check.unwrap();
    assert_eq!(
        header(&ok(&response).headers, "x-auth-subject"),
        Some("svc-1")
    );
    let served = std::fs::read_to_string(files.path("tls.crt")).unwrap();
    assert_eq!(outcome.served, pem_der(&served));

    // A plaintext gRPC client gets no answer from a TLS listener.
    let plain = async {
        let mut client = AuthorizationClient::connect(format!("http://{}", server.addr))
            .await
            .map_err(|e| e.to_string())?;
        client.check(request(&[])).await.map_err(|e| e.to_string())
    };
    let plain = tokio::time::timeout(Duration::from_secs(5), plain)
        .await
        .expect("the server closes a plaintext connection");
    assert!(plain.is_err(), "plaintext answered: {plain:?}");

    // A client that does not trust the server's CA refuses it.
    let other = TestCa::new("someone else");
    let refused = check_over_tls(server.addr, client_config(&other, None)).await;
    assert!(refused.is_err(), "a client must verify the server");
}

#[tokio::test]
async fn with_client_ca_file_only_certificates_from_that_ca_are_accepted() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("Envoy client CA");
    let strangers = TestCa::new("another CA");
    let files = Files::new(&ca);
    files.write_client_ca(&clients);
    let server = serve(&files.yaml(true), Duration::from_secs(2)).await;
    assert!(server.tls.requires_client_certificate());
    assert_eq!(
        metric(&server, "portcullis_tls_handshake_failures_total").await,
        0
    );

    // No client certificate: refused (TLS 1.3 reports it after the client's side of the handshake, so
    // the Check is what fails).
    let none = check_over_tls(server.addr, client_config(&ca, None)).await;
    assert!(
        none.as_ref().map_or(true, |o| o.check.is_err()),
        "a client without a certificate was answered"
    );
    // A certificate from another CA: refused.
    let stranger = check_over_tls(
        server.addr,
        client_config(&ca, Some(&strangers.client_pem("envoy"))),
    )
    .await;
    assert!(
        stranger.as_ref().map_or(true, |o| o.check.is_err()),
        "a certificate from another CA was accepted"
    );
    // Each refusal is counted (TLS 1.3 reports it once the client has finished, so wait a little).
    let mut failures = 0;
    for _ in 0..50 {
        failures = metric(&server, "portcullis_tls_handshake_failures_total").await;
        if failures >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures, 2);
    // The right one: answered.
    let outcome = check_over_tls(
        server.addr,
        client_config(&ca, Some(&clients.client_pem("envoy"))),
    )
    .await
    .unwrap();
    ok(&outcome.check.unwrap());
}

/// New connections get the new certificate once it is on disk; `tries` × 100 ms at most.
async fn wait_for_served(
    addr: std::net::SocketAddr,
    config: impl Fn() -> rustls::ClientConfig,
    want: &[u8],
) -> Outcome {
    for _ in 0..50 {
        if let Ok(outcome) = check_over_tls(addr, config()).await {
            if outcome.served == want {
                return outcome;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the rotated certificate was not served within 5 s");
}

#[tokio::test]
async fn rotated_files_are_served_without_a_restart() {
    let ca = TestCa::new("server CA");
    let files = Files::new(&ca);
    let server = serve(&files.yaml(false), Duration::from_millis(200)).await;
    let first = check_over_tls(server.addr, client_config(&ca, None))
        .await
        .unwrap();
    let before = server.tls.fingerprint();

    // A new certificate and key (new serial, new key): seen by a new connection.
    let rotated = ca.server_pem();
    files.write_server(&rotated);
    let outcome = wait_for_served(
        server.addr,
        || client_config(&ca, None),
        &pem_der(&rotated.0),
    )
    .await;
    ok(&outcome.check.unwrap());
    assert_ne!(outcome.served, first.served);
    assert_ne!(server.tls.fingerprint(), before);

    // A half-done rotation (a new certificate, the old key) does not load: the served one stays.
    let next = ca.server_pem();
    write_file(&files.path("tls.crt"), &next.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcome = check_over_tls(server.addr, client_config(&ca, None))
        .await
        .unwrap();
    assert_eq!(outcome.served, pem_der(&rotated.0), "kept the working pair");
    ok(&outcome.check.unwrap());
    // Its key arrives: served.
    write_file(&files.path("tls.key"), &next.1);
    wait_for_served(server.addr, || client_config(&ca, None), &pem_der(&next.0)).await;
    assert_eq!(
        metric(&server, "portcullis_tls_reloads_total{result=\"ok\"}").await,
        2
    );
    assert_eq!(
        metric(&server, "portcullis_tls_reloads_total{result=\"failed\"}").await,
        1
    );
    assert_eq!(
        metric(
            &server,
            "portcullis_tls_certificate_expiry_timestamp_seconds"
        )
        .await,
        not_after(&next.0)
    );
}

#[tokio::test]
async fn a_rotated_client_ca_is_used_without_a_restart() {
    let ca = TestCa::new("server CA");
    let old = TestCa::new("old client CA");
    let new = TestCa::new("new client CA");
    let files = Files::new(&ca);
    files.write_client_ca(&old);
    let server = serve(&files.yaml(true), Duration::from_millis(200)).await;
    let old_client = old.client_pem("envoy");
    let new_client = new.client_pem("envoy");
    let answered = |o: &Result<Outcome, String>| o.as_ref().is_ok_and(|o| o.check.is_ok());
    assert!(answered(
        &check_over_tls(server.addr, client_config(&ca, Some(&old_client))).await
    ));
    assert!(!answered(
        &check_over_tls(server.addr, client_config(&ca, Some(&new_client))).await
    ));

    files.write_client_ca(&new);
    let mut switched = false;
    for _ in 0..50 {
        if answered(&check_over_tls(server.addr, client_config(&ca, Some(&new_client))).await) {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the new client CA was not used within 5 s");
    assert!(!answered(
        &check_over_tls(server.addr, client_config(&ca, Some(&old_client))).await
    ));
}

fn problems(config: &portcullis::ServerTlsConfig) -> Vec<String> {
    ServerTls::check(config)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn tls_config(dir: &Path, client_ca: bool) -> portcullis::ServerTlsConfig {
    let ca = if client_ca {
        format!(
            ", client_ca_file: '{}'",
            dir.join("client-ca.pem").display()
        )
    } else {
        String::new()
    };
    let yaml = format!(
        "server: {{tls: {{cert_file: '{}', key_file: '{}'{ca}}}}}\nproviders: [{{name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}}]",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    );
    Config::from_yaml_str(&yaml).unwrap().server.tls.unwrap()
}

#[tokio::test]
async fn unusable_files_are_reported_with_their_field_paths() {
    let ca = TestCa::new("server CA");
    let files = Files::new(&ca);
    let dir = files.dir.path();
    assert!(problems(&tls_config(dir, false)).is_empty());

    // Missing files.
    let found = problems(&tls_config(dir, true));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("server.tls.client_ca_file: cannot read `"),
        "{found:?}"
    );

    // Not PEM; no key; a CA file without a certificate.
    write_file(&dir.join("tls.crt"), "hello");
    write_file(
        &dir.join("tls.key"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    write_file(&dir.join("client-ca.pem"), "");
    let found = problems(&tls_config(dir, true));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("server.tls.cert_file: holds no PEM certificate"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("server.tls.key_file: no usable private key"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("server.tls.client_ca_file: holds no PEM certificate"),
        "{found:?}"
    );

    // A key that is not the certificate's.
    let (cert, _) = ca.server_pem();
    let (_, other_key) = ca.server_pem();
    write_file(&dir.join("tls.crt"), &cert);
    write_file(&dir.join("tls.key"), &other_key);
    assert_eq!(
        problems(&tls_config(dir, false)),
        ["server.tls.key_file: does not match the certificate in server.tls.cert_file"]
    );
}

#[tokio::test]
async fn the_same_listener_wraps_an_http_server() {
    // What an HTTP listener (forward auth) does with `server.tls`: an axum router behind `TlsListener`
    // with the HTTP/1.1 ALPN, serving the same reloading certificate.
    let ca = TestCa::new("server CA");
    let files = Files::new(&ca);
    let config = Config::from_yaml_str(&files.yaml(false)).unwrap();
    let tls = Arc::new(ServerTls::load(config.server.tls.as_ref().unwrap()).unwrap());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener =
        portcullis::server::tls::TlsListener::new(tcp, tls.acceptor(&[b"http/1.1"]).unwrap())
            .unwrap();
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "over tls" }));
    let task = tokio::spawn(async move { axum::serve(listener, router).await });

    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/hello", addr.port());
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "over tls");
    let plain = reqwest::get(format!("http://127.0.0.1:{}/hello", addr.port())).await;
    assert!(plain.is_err(), "plaintext HTTP answered: {plain:?}");
    task.abort();
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("HS_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_config_and_serve_refuse_a_key_that_is_not_the_certificates() {
    let ca = TestCa::new("server CA");
    let files = Files::new(&ca);
    let path = files.path("config.yaml");
    let listen = "  listen: '127.0.0.1:0'\n  admin_listen: '127.0.0.1:0'\n";
    std::fs::write(&path, files.yaml_with(false, listen)).unwrap();
    let config = path.to_str().unwrap();
    let (code, stdout, _) = run(&["validate-config", config]);
    assert_eq!(code, 0, "{stdout}");

    write_file(&files.path("tls.key"), &ca.server_pem().1);
    let (code, stdout, _) = run(&["validate-config", config]);
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains(
            "  server.tls.key_file: does not match the certificate in server.tls.cert_file"
        ),
        "{stdout}"
    );
    // The files usually exist only where the server runs: --skip-secrets leaves them alone.
    let (code, stdout, _) = run(&["validate-config", "--skip-secrets", config]);
    assert_eq!(code, 0, "{stdout}");
    // serve refuses to start, saying what and where.
    let (code, _, stderr) = run(&["serve", "--config", config]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("server.tls.key_file: does not match the certificate"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_command_speaks_tls_with_a_client_certificate() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let files = Files::new(&ca);
    files.write_client_ca(&clients);
    let server = serve(&files.yaml(true), Duration::from_secs(2)).await;
    let (cert, key) = clients.client_pem("ops");
    write_file(&files.path("ops.crt"), &cert);
    write_file(&files.path("ops.key"), &key);
    write_file(&files.path("server-ca.pem"), ca.pem());
    let https = format!("https://localhost:{}", server.addr.port());
    let auth = format!("authorization: Bearer {}", token());
    let path = |name: &str| files.path(name).to_str().unwrap().to_owned();
    let ask = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
    };

    let (code, stdout, stderr) = ask(vec![
        "check".into(),
        "--addr".into(),
        https.clone(),
        "--ca-file".into(),
        path("server-ca.pem"),
        "--cert-file".into(),
        path("ops.crt"),
        "--key-file".into(),
        path("ops.key"),
        "-H".into(),
        auth.clone(),
        "--expect".into(),
        "allowed".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("svc-1"), "{stdout}");

    // Without the client certificate the server refuses: nothing was asked (exit 1).
    let (code, _, stderr) = ask(vec![
        "check".into(),
        "--addr".into(),
        https.clone(),
        "--ca-file".into(),
        path("server-ca.pem"),
        "-H".into(),
        auth.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1, "{stderr}");
    // https needs the CA; the TLS flags need https.
    let (code, _, stderr) = ask(vec!["check".into(), "--addr".into(), https.clone()])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("needs --ca-file"), "{stderr}");
    let plain = format!("http://127.0.0.1:{}", server.addr.port());
    let (code, _, stderr) = ask(vec![
        "check".into(),
        "--addr".into(),
        plain,
        "--ca-file".into(),
        path("server-ca.pem"),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("need an https:// address"), "{stderr}");
}

#[tokio::test]
async fn the_tls_listener_closes_when_serving_stops() {
    let ca = TestCa::new("server CA");
    let files = Files::new(&ca);
    let server = serve(&files.yaml(false), Duration::from_secs(2)).await;
    let addr = server.addr;
    ok(&check_over_tls(addr, client_config(&ca, None))
        .await
        .unwrap()
        .check
        .unwrap());
    drop(server); // shutdown (drain_seconds: 0)
    let mut closed = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the port still accepts connections after shutdown");
}

#[tokio::test]
async fn the_http_forward_auth_listener_speaks_tls_with_the_same_client_ca() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let files = Files::new(&ca);
    files.write_client_ca(&clients);
    let server = serve(
        &files.yaml_with(true, "  http_mode: nginx\n  http_listen: 127.0.0.1:0\n"),
        Duration::from_secs(2),
    )
    .await;
    let url = format!("https://localhost:{}/auth", server.http.unwrap().port());
    let (cert, key) = clients.client_pem("nginx");
    let client = |identity: Option<reqwest::Identity>| {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.pem().as_bytes()).unwrap());
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        builder.build().unwrap()
    };
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let answer = client(Some(identity))
        .get(&url)
        .header("authorization", format!("Bearer {}", token()))
        .header("x-original-uri", "/items")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer
            .headers()
            .get("x-auth-subject")
            .and_then(|v| v.to_str().ok()),
        Some("svc-1")
    );
    // No client certificate: no answer at all, let alone an allow.
    let refused = client(None)
        .get(&url)
        .header("authorization", format!("Bearer {}", token()))
        .header("x-original-uri", "/items")
        .header("x-original-method", "GET")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    // Plaintext HTTP to the TLS listener: no answer either.
    let plain = reqwest::get(format!(
        "http://127.0.0.1:{}/auth",
        server.http.unwrap().port()
    ))
    .await;
    assert!(plain.is_err(), "plaintext answered: {plain:?}");
}
