//! Hot reload: a real server on 127.0.0.1:0 reloading its configuration file while checks run, against
//! fake IdPs on loopback whose hit counters show which key sets were fetched again; and the real binary
//! reloading on SIGHUP.

use portcullis_test as common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use portcullis::server::{ReloadError, Reloader};
use portcullis::{Clock, Config, Sources};

const AUD: &str = "https://api.example.com/";

/// Two `jwt` providers (one per IdP) and `policy` (routes and the like).
fn config(one: &FakeIdp, two: &FakeIdp, policy: &str) -> String {
    format!(
        "
server:
  drain_seconds: 0
providers:
  - {{name: one, type: jwt, issuer: '{one}', audiences: ['{AUD}'], algorithms: [RS256]}}
  - {{name: two, type: jwt, issuer: '{two}', audiences: ['{AUD}'], algorithms: [RS256]}}
{policy}
",
        one = one.issuer,
        two = two.issuer,
    )
}

const ROUTES: &str = "routes:
  - {name: read, match: {path_prefix: /read}, require: {scopes: {all_of: ['read:data']}}}
  - {name: admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [admin]}}}";

/// A server serving a configuration file, with its reloader.
struct Served {
    server: TestServer,
    reloader: Arc<Reloader>,
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: CancellationToken,
}

impl Served {
    /// Serves `yaml` from a new file in a temporary directory.
    async fn start(yaml: &str) -> Served {
        Served::start_with(yaml, portcullis::io::sources_with(Default::default())).await
    }

    async fn start_with(yaml: &str, secrets: Sources) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.yaml");
        std::fs::write(&path, yaml).unwrap();
        Served::start_at(path, Some(dir), secrets).await
    }

    /// Serves the file at `path` (already written).
    async fn start_at(path: PathBuf, dir: Option<tempfile::TempDir>, secrets: Sources) -> Served {
        let yaml = std::fs::read_to_string(&path).unwrap();
        let config = Config::from_yaml_str(&yaml).unwrap();
        let server = TestServer::start_with(&yaml, secrets.clone(), Clock::system())
            .await
            .ready()
            .await;
        let reloader = Arc::new(Reloader::new(
            Arc::clone(&server.app),
            path.clone(),
            config,
            secrets,
            Clock::system(),
        ));
        Served {
            server,
            reloader,
            path,
            _dir: dir,
            stop: CancellationToken::new(),
        }
    }

    /// Starts watching the file (every 100 ms, to keep the tests fast; `serve` reads it every second).
    fn watch(&self) {
        tokio::spawn(
            Arc::clone(&self.reloader).watch(Duration::from_millis(100), self.stop.clone()),
        );
    }

    fn write(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).unwrap();
    }

    /// Reloads counted so far: (ok, failed).
    fn reloads(&self) -> (u64, u64) {
        self.server.app.reloads().counts()
    }

    /// Waits (at most 20 s: the watcher waits for the file to be quiet, and the machine may be busy) until
    /// `ok` reloads succeeded.
    async fn wait_reloads(&self, ok: u64) {
        for _ in 0..400 {
            if self.reloads().0 >= ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no reload seen: {:?}", self.reloads());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn sha256_prefix(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Setup {
    one: FakeIdp,
    two: FakeIdp,
    key_one: TestKey,
    key_two: TestKey,
}

async fn idps() -> Setup {
    let (one, two) = (FakeIdp::start().await, FakeIdp::start().await);
    let (key_one, key_two) = (TestKey::rsa("one-1"), TestKey::rsa("two-1"));
    one.set_keys(&[&key_one]);
    two.set_keys(&[&key_two]);
    Setup {
        one,
        two,
        key_one,
        key_two,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_and_invalid_reloads_under_load_fail_no_check() {
    let s = idps().await;
    let served = Served::start(&config(&s.one, &s.two, ROUTES)).await;
    let reader = s.key_one.token(&claims(&s.one.issuer, AUD)); // read:data write:data
    let client = served.server.client().await;

    // Four tasks asking Checks in a loop: /read is allowed, /admin is a 403, whatever config is in force.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for task in 0..4 {
        let (stop, done, wrong) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&wrong));
        let (mut client, auth) = (client.clone(), format!("Bearer {reader}"));
        load.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (path, want) = if (n + task).is_multiple_of(2) {
                    ("/read/x", 200)
                } else {
                    ("/admin/x", 403)
                };
                n += 1;
                let answer = client
                    .check(request_to("GET", path, &[("authorization", &auth)]))
                    .await;
                match answer {
                    Ok(answer) if http_status(answer.get_ref()) == want => {}
                    _ => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let extra = format!("{ROUTES}\n  - {{name: extra, match: {{path_prefix: /extra}}}}");
    let invalid = config(&s.one, &s.two, ROUTES).replace("audiences:", "audience:");
    for round in 0..3 {
        let before = done.load(Ordering::Relaxed);
        served.write(&config(&s.one, &s.two, &extra));
        served.reloader.reload("test").await.unwrap();
        served.write(&invalid);
        let error = served.reloader.reload("test").await.unwrap_err();
        assert!(matches!(error, ReloadError::Invalid(_)), "{error}");
        let paths: Vec<String> = error.problems().into_iter().map(|p| p.path).collect();
        assert!(
            paths.iter().any(|p| p == "providers[0].audience"),
            "{paths:?}"
        );
        assert!(served.server.app.ready(), "readiness stays green");
        served.write(&config(&s.one, &s.two, ROUTES));
        served.reloader.reload("test").await.unwrap();
        // Let the load run between rounds, so checks straddle every swap.
        while done.load(Ordering::Relaxed) < before + 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(served.reloads(), (2 * (round + 1), round + 1));
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) >= 60);
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "every answer as expected");
    // The reloads of an unchanged provider set fetched nothing again.
    assert_eq!((s.one.jwks_hits(), s.two.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn unchanged_providers_keep_key_sets_and_token_cache_a_changed_one_refetches() {
    let s = idps().await;
    let served = Served::start(&config(&s.one, &s.two, ROUTES)).await;
    let token = s.key_one.token(&claims(&s.one.issuer, AUD));
    assert_eq!(
        http_status(&check_path(&served.server, "/read", &token).await),
        200
    );
    let hits = (s.one.jwks_hits(), s.two.jwks_hits());
    assert_eq!(hits, (1, 1));
    assert!(served
        .server
        .metrics()
        .await
        .contains("portcullis_token_cache_entries 1\n"));

    // Only a route changes: no key set is fetched, the verified token stays cached.
    let routes = ROUTES.replace("all_of: [admin]", "all_of: [admin, root]");
    served.write(&config(&s.one, &s.two, &routes));
    let changes = served.reloader.reload("test").await.unwrap();
    assert_eq!(changes.routes_changed, ["admin"]);
    assert!(changes.providers_changed.is_empty(), "{changes:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((s.one.jwks_hits(), s.two.jwks_hits()), hits);
    assert!(served
        .server
        .metrics()
        .await
        .contains("portcullis_token_cache_entries 1\n"));
    assert_eq!(
        http_status(&check_path(&served.server, "/read", &token).await),
        200
    );

    // Provider `two` changes: it fetches its keys again, `one` does not.
    let changed = config(&s.one, &s.two, &routes).replace(
        &format!("issuer: '{}', audiences: ['{AUD}']", s.two.issuer),
        &format!("issuer: '{}', audiences: ['{AUD}', other]", s.two.issuer),
    );
    served.write(&changed);
    let changes = served.reloader.reload("test").await.unwrap();
    assert_eq!(changes.providers_changed, ["two"]);
    assert_eq!(s.one.jwks_hits(), hits.0);
    assert_eq!(s.two.jwks_hits(), hits.1 + 1);
    let other = s
        .key_two
        .token(&merge(claims(&s.two.issuer, "other"), json!({})));
    assert_eq!(
        http_status(&check_path(&served.server, "/read", &other).await),
        200,
        "the changed provider's new audience applies"
    );
}

#[tokio::test]
async fn an_unchanged_introspection_provider_keeps_its_cache() {
    let up = common::upstream::FakeUpstream::start().await;
    up.answer(
        "introspect:opaque-1",
        200,
        json!({"active": true, "sub": "alice", "exp": now() + 600}),
    );
    let yaml = |timeout: u64, route: &str| {
        format!(
            "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: {}
    client_id: portcullis
    client_secret: {{env: INTROSPECTION_SECRET}}
    upstream: {{timeout_seconds: {timeout}}}
routes:
  - {{name: r, match: {{path_prefix: {route}}}}}
",
            up.url("/introspect")
        )
    };
    let secrets = portcullis::io::sources_with(
        [("INTROSPECTION_SECRET".to_owned(), "s3cret".to_owned())].into(),
    );
    let served = Served::start_with(&yaml(1, "/r"), secrets).await;
    let ask = || check_path(&served.server, "/r", "opaque-1");
    assert_eq!(http_status(&ask().await), 200);
    assert_eq!(http_status(&ask().await), 200);
    assert_eq!(up.hits(), 1, "cached");

    served.write(&yaml(1, "/other"));
    served.reloader.reload("test").await.unwrap();
    assert_eq!(http_status(&ask().await), 200);
    assert_eq!(
        up.hits(),
        1,
        "a route-only reload keeps the introspection cache"
    );

    served.write(&yaml(2, "/other"));
    let changes = served.reloader.reload("test").await.unwrap();
    assert_eq!(changes.providers_changed, ["idp"]);
    assert_eq!(http_status(&ask().await), 200);
    assert_eq!(
        up.hits(),
        2,
        "a changed provider starts with an empty cache"
    );
}

fn merge(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

#[tokio::test]
async fn a_mode_flip_by_rewriting_the_file_takes_effect_without_a_restart() {
    let s = idps().await;
    let permissive = "routes:
  - {name: orders, match: {path_prefix: /orders}, mode: permissive, require: {scopes: {all_of: ['orders:write']}}}";
    let served = Served::start(&config(&s.one, &s.two, permissive)).await;
    served.watch();
    let token = s.key_one.token(&claims(&s.one.issuer, AUD));
    let answer = check_path(&served.server, "/orders/1", &token).await;
    assert_eq!(
        header(&ok(&answer).headers, "x-auth-would-deny"),
        Some("missing_scope")
    );

    served.write(&config(
        &s.one,
        &s.two,
        &permissive.replace("mode: permissive", "mode: enforce"),
    ));
    served.wait_reloads(1).await;
    let answer = check_path(&served.server, "/orders/1", &token).await;
    assert_eq!(http_status(&answer), 403);
    assert_eq!(served.reloads(), (1, 0));
    assert_eq!((s.one.jwks_hits(), s.two.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_triggers_a_reload() {
    let s = idps().await;
    // A ConfigMap volume: `portcullis.yaml -> ..data/portcullis.yaml`, `..data -> ..<timestamp>`.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path();
    let version = |name: &str, yaml: &str| {
        std::fs::create_dir(mount.join(name)).unwrap();
        std::fs::write(mount.join(name).join("portcullis.yaml"), yaml).unwrap();
    };
    version("..2026_01_01_00_00_00.1", &config(&s.one, &s.two, ROUTES));
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/portcullis.yaml", mount.join("portcullis.yaml")).unwrap();
    let path = mount.join("portcullis.yaml");
    let served =
        Served::start_at(path, None, portcullis::io::sources_with(Default::default())).await;
    served.watch();
    let token = s.key_one.token(&claims(&s.one.issuer, AUD));
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        403
    );

    // The kubelet's update: a new directory, a new `..data` link renamed over the old one, the old
    // directory removed. The path the server reads never changes.
    let open = ROUTES.replace("all_of: [admin]", "all_of: ['read:data']");
    version("..2026_01_01_00_01_00.2", &config(&s.one, &s.two, &open));
    std::os::unix::fs::symlink("..2026_01_01_00_01_00.2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(mount.join("..2026_01_01_00_00_00.1")).unwrap();
    served.wait_reloads(1).await;
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        200
    );
    drop(dir);
}

#[tokio::test]
async fn a_listen_address_change_is_refused_and_the_old_config_keeps_serving() {
    let s = idps().await;
    let served = Served::start(&config(&s.one, &s.two, ROUTES)).await;
    let token = s.key_one.token(&claims(&s.one.issuer, AUD));
    let open = ROUTES.replace("all_of: [admin]", "all_of: ['read:data']");
    let moved = config(&s.one, &s.two, &open).replace(
        "drain_seconds: 0",
        "drain_seconds: 0\n  listen: '127.0.0.1:19001'\n  admin_listen: '127.0.0.1:19002'",
    );
    served.write(&moved);
    let error = served.reloader.reload("test").await.unwrap_err();
    assert!(
        matches!(&error, ReloadError::NotReloadable(f) if f == &["server.listen", "server.admin_listen"]),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("cannot change without a restart"),
        "{error}"
    );
    assert_eq!(served.reloads(), (0, 1));
    // The route change in the same file did not apply: the old config serves.
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        403
    );
    assert!(served.server.app.ready());
}

/// A reload reads the file with the loader of `serve` and `validate-config`: a bad enum value, a
/// duplicate provider, two bad routes and a missing key set file are all reported by one reload.
#[tokio::test]
async fn a_refused_reload_reports_every_problem_of_the_file() {
    let s = idps().await;
    let served = Served::start(&config(&s.one, &s.two, ROUTES)).await;
    let missing = served.path.with_file_name("keys.json");
    served.write(&format!(
        "
mode: enforcing
providers:
  - {{name: a, type: jwt, issuer: 'https://a.example/', audiences: [x], jwks_file: '{}'}}
  - {{name: a, type: jwt, issuer: 'https://b.example/', audiences: [x], jwks_uri: 'https://b.example/jwks'}}
routes:
  - {{name: r1, match: {{path: /x, methods: GET}}}}
  - {{name: r2, match: {{path: /y}}, providers: [nobody]}}
",
        missing.display()
    ));
    let error = served.reloader.reload("test").await.unwrap_err();
    assert!(matches!(error, ReloadError::Invalid(_)), "{error:?}");
    let mut paths: Vec<String> = error.problems().into_iter().map(|p| p.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "mode",
            "providers[0].jwks_file",
            "providers[1].name",
            "routes[0].match.methods",
            "routes[1].providers[0]",
        ],
        "{error:?}"
    );
    assert_eq!(served.reloads(), (0, 1));
    assert!(served.server.app.ready(), "the running configuration stays");
}

#[tokio::test]
async fn metrics_show_reload_counts_and_the_config_hash() {
    let s = idps().await;
    let first = config(&s.one, &s.two, ROUTES);
    let served = Served::start(&first).await;
    let metrics = served.server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "portcullis_config_info{{hash=\"{}\"}} 1\n",
            sha256_prefix(&first)
        )),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 0\n"));
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"failed\"} 0\n"));

    // (The routes stay: a file that drops routes with requirements is refused, see below.)
    let second = config(&s.one, &s.two, &format!("mode: permissive\n{ROUTES}"));
    served.write(&second);
    served.reloader.reload("test").await.unwrap();
    served.write("providers: [");
    served.reloader.reload("test").await.unwrap_err();
    let metrics = served.server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "portcullis_config_info{{hash=\"{}\"}} 1\n",
            sha256_prefix(&second)
        )),
        "the hash of the file in force: {metrics}"
    );
    assert_ne!(sha256_prefix(&first), sha256_prefix(&second));
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 1\n"));
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"failed\"} 1\n"));
}

/// `portcullis serve --config FILE` as a child process, its log collected, killed when dropped.
struct Process {
    child: Child,
    grpc: String,
    admin: String,
    log: Arc<std::sync::Mutex<String>>,
}

impl Process {
    fn serve(config: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (mut grpc, mut admin) = (String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        while grpc.is_empty() || admin.is_empty() {
            assert!(Instant::now() < deadline, "no serving line");
            let line = lines.next().expect("server exited").unwrap();
            for field in line.split_whitespace() {
                if let Some(addr) = field.strip_prefix("grpc.listen=") {
                    grpc = addr.to_owned();
                }
                if let Some(addr) = field.strip_prefix("admin.listen=") {
                    admin = addr.to_owned();
                }
            }
            log.lock().unwrap().push_str(&line);
        }
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process {
            child,
            grpc,
            admin,
            log,
        }
    }

    async fn check(&self, token: &str) -> u32 {
        let mut client = portcullis::pb::auth::authorization_client::AuthorizationClient::connect(
            format!("http://{}", self.grpc),
        )
        .await
        .unwrap();
        let auth = format!("Bearer {token}");
        let answer = client.check(request(&[("authorization", &auth)])).await;
        http_status(answer.unwrap().get_ref())
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_and_reads_file_secrets_again() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256-secret");
    std::fs::write(&secret, "the-first-long-random-shared-secret\n").unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(
        &path,
        format!(
            "server: {{listen: '127.0.0.1:0', admin_listen: '127.0.0.1:0', drain_seconds: 0}}
providers:
  - name: legacy
    type: jwt
    issuer: legacy-issuer
    audiences: [api]
    algorithms: [HS256]
    shared_secret: {{file: '{}'}}
",
            secret.display()
        ),
    )
    .unwrap();
    let server = Process::serve(&path);
    let claims = claims("legacy-issuer", "api");
    let first = hs256_token(
        b"the-first-long-random-shared-secret",
        &json!({"alg": "HS256"}),
        &claims,
    );
    let second = hs256_token(
        b"the-second-long-random-shared-secret",
        &json!({"alg": "HS256"}),
        &claims,
    );
    assert_eq!(server.check(&first).await, 200);

    // The secret is rotated; the configuration file is not touched, so only SIGHUP reloads.
    std::fs::write(&secret, "the-second-long-random-shared-secret\n").unwrap();
    assert_eq!(server.check(&second).await, 401);
    server.signal("HUP");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.metrics().await;
        if metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(server.check(&second).await, 200);
    assert_eq!(server.check(&first).await, 401, "the old secret is gone");
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("providers.changed=[\"legacy\"]"), "{log}");
    assert!(
        !log.contains("the-second-long") && !log.contains("the-first-long"),
        "no secret in the log"
    );
}

/// `serve --config DIR`: the binary serves the merged fragments, and an added fragment is reloaded (on
/// SIGHUP, or by the watcher if it sees it first), its route deciding from then on.
#[tokio::test]
async fn serve_reloads_a_directory_of_fragments_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let fragments = dir.path().join("config.d");
    std::fs::create_dir(&fragments).unwrap();
    let secret = dir.path().join("hs256-secret");
    std::fs::write(&secret, "the-first-long-random-shared-secret\n").unwrap();
    std::fs::write(
        fragments.join("00-server.yaml"),
        "server: {listen: '127.0.0.1:0', admin_listen: '127.0.0.1:0', drain_seconds: 0}\n",
    )
    .unwrap();
    std::fs::write(
        fragments.join("10-legacy.yaml"),
        format!(
            "providers:
  - name: legacy
    type: jwt
    issuer: legacy-issuer
    audiences: [api]
    algorithms: [HS256]
    shared_secret: {{file: '{}'}}
",
            secret.display()
        ),
    )
    .unwrap();
    let server = Process::serve(&fragments);
    let token = hs256_token(
        b"the-first-long-random-shared-secret",
        &json!({"alg": "HS256"}),
        &claims("legacy-issuer", "api"),
    );
    assert_eq!(server.check(&token).await, 200);

    std::fs::write(
        fragments.join("20-admin.yaml"),
        "routes:\n  - {name: everything, match: {path_prefix: /}, require: {scopes: {all_of: [admin]}}}\n",
    )
    .unwrap();
    server.signal("HUP");
    let mut status = 0;
    for _ in 0..400 {
        status = server.check(&token).await;
        if status == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 403, "the added fragment's route decides");
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 0\n"),
        "{metrics}"
    );
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("routes.added=[\"everything\"]"), "{log}");
}

/// Issue 28 finding 4: a half-written file (valid YAML whose last route lost its `require`) is never
/// adopted, by the watcher or by a signal, unless the file names the route in
/// `server.reload_allow_weakening`; the running configuration keeps serving.
#[tokio::test]
async fn a_half_written_file_that_drops_a_routes_requirements_is_refused() {
    let s = idps().await;
    let served = Served::start(&config(&s.one, &s.two, ROUTES)).await;
    served.watch();
    let token = s.key_one.token(&claims(&s.one.issuer, AUD));
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        403
    );
    // What a paused copy leaves: the file cut inside the last route, before its `require`.
    let full = config(&s.one, &s.two, ROUTES);
    let cut = &full[..full
        .rfind(", require: {scopes: {all_of: [admin]}}")
        .unwrap()];
    let cut = format!("{cut}}}\n");
    served.write(&cut);
    // The watcher tries it once the file is quiet, and refuses it.
    for _ in 0..400 {
        if served.reloads().1 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served.reloads(), (0, 1));
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        403
    );
    // A signal does not adopt it either, and says what to do.
    let error = served.reloader.reload("test").await.unwrap_err();
    assert!(
        matches!(&error, ReloadError::Weakened(w) if w.len() == 1 && w[0].route == "admin"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("server.reload_allow_weakening"),
        "{error}"
    );
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        403
    );
    // Meant: the file names the route, and the reload goes through.
    let meant = cut.replace(
        "drain_seconds: 0",
        "drain_seconds: 0\n  reload_allow_weakening: [admin]",
    );
    served.write(&meant);
    served.reloader.reload("test").await.unwrap();
    assert_eq!(
        http_status(&check_path(&served.server, "/admin", &token).await),
        200
    );
}

/// Issue 28 finding 6: a rotated `revocation.admin_secret` file is read on reload: the new secret works
/// at once and the old (possibly leaked) one is refused; a secret that cannot be read refuses the reload.
#[tokio::test]
async fn a_rotated_admin_secret_is_read_on_reload() {
    let s = idps().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("admin-secret");
    std::fs::write(&secret, "the-first-admin-secret-0123456789\n").unwrap();
    let yaml = config(
        &s.one,
        &s.two,
        &format!(
            "{ROUTES}\nrevocation: {{admin_secret: {{file: '{}'}}}}",
            secret.display()
        ),
    );
    let served = Served::start(&yaml).await;
    let revoke = |bearer: &'static str| {
        let url = format!("http://{}/admin/revocations", served.server.admin);
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(bearer)
                .json(&json!({"kind": "sub", "value": "someone"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke("the-first-admin-secret-0123456789").await, 201);
    std::fs::write(&secret, "the-second-admin-secret-0123456789\n").unwrap();
    served.reloader.reload("test").await.unwrap();
    assert_eq!(revoke("the-first-admin-secret-0123456789").await, 401);
    assert_eq!(revoke("the-second-admin-secret-0123456789").await, 201);
    // Unreadable: the reload is refused, loudly, and the secret in force stays.
    std::fs::remove_file(&secret).unwrap();
    let error = served.reloader.reload("test").await.unwrap_err();
    assert!(
        error
            .problems()
            .iter()
            .any(|p| p.path == "revocation.admin_secret"),
        "{error:?}"
    );
    assert_eq!(revoke("the-second-admin-secret-0123456789").await, 201);
}
