//! `--config DIR`: a configuration in fragments, one per team. A real server on 127.0.0.1:0 serving the
//! merged configuration and reloading when a fragment is added, changed or removed (its watcher polling
//! the directory), against a fake IdP on loopback; and the binary's `validate-config`, `explain` and
//! `serve` on a directory.

use portcullis_test as common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio_util::sync::CancellationToken;

use portcullis::io::ConfigBytes;
use portcullis::server::Reloader;
use portcullis::Clock;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const AUD: &str = "https://api.example.com/";

/// The platform team's fragment: the server, a jwt provider (`one`), the default route.
fn base(one: &FakeIdp) -> String {
    format!(
        "
server:
  drain_seconds: 0
providers:
  - {{name: one, type: jwt, issuer: '{}', audiences: ['{AUD}'], algorithms: [RS256]}}
routes:
  - {{name: base-two-only, match: {{path_prefix: /two-only}}, providers: [two]}}
",
        one.issuer
    )
}

/// Team B's fragment: its own provider (`two`, used by a route of the base fragment too) and its routes,
/// which use the base fragment's provider.
fn team_b(two: &FakeIdp) -> String {
    format!(
        "
providers:
  - {{name: two, type: jwt, issuer: '{}', audiences: ['{AUD}'], algorithms: [RS256]}}
routes:
  - {{name: b-admin, match: {{path_prefix: /b/admin}}, providers: [one], require: {{scopes: {{all_of: [admin]}}}}}}
  - {{name: b-read, match: {{path_prefix: /b}}, require: {{scopes: {{all_of: ['read:data']}}}}}}
",
        two.issuer
    )
}

struct Setup {
    one: FakeIdp,
    two: FakeIdp,
    /// Tokens (scopes `read:data write:data`) from each IdP.
    from_one: String,
    from_two: String,
}

async fn idps() -> Setup {
    let (one, two) = (FakeIdp::start().await, FakeIdp::start().await);
    let (key_one, key_two) = (TestKey::rsa("one-1"), TestKey::rsa("two-1"));
    one.set_keys(&[&key_one]);
    two.set_keys(&[&key_two]);
    let from_one = key_one.token(&claims(&one.issuer, AUD));
    let from_two = key_two.token(&claims(&two.issuer, AUD));
    Setup {
        one,
        two,
        from_one,
        from_two,
    }
}

/// A server serving a directory of fragments, with its reloader watching it.
struct Served {
    server: TestServer,
    reloader: Arc<Reloader>,
    dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Served {
    async fn start(fragments: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in fragments {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = portcullis::io::load_config(dir.path()).unwrap();
        let secrets = portcullis::io::sources_with(Default::default());
        let server = TestServer::start_config(config.clone(), secrets.clone(), Clock::system())
            .await
            .ready()
            .await;
        let reloader = Arc::new(Reloader::new(
            Arc::clone(&server.app),
            dir.path(),
            config,
            secrets,
            Clock::system(),
        ));
        let stop = CancellationToken::new();
        // Every 100 ms to keep the test short; `serve` reads every second.
        tokio::spawn(Arc::clone(&reloader).watch(Duration::from_millis(100), stop.clone()));
        Served {
            server,
            reloader,
            dir,
            stop,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a fragment the way a writer should: a temporary dotfile beside it, renamed over it.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path(name)).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(name)).unwrap();
    }

    fn reloads(&self) -> (u64, u64) {
        self.server.app.reloads().counts()
    }

    async fn status(&self, path: &str, token: &str) -> u32 {
        http_status(&check_path(&self.server, path, token).await)
    }

    /// Waits (at most 30 s: the watcher waits for the fragments to be quiet, and the machine may be busy)
    /// until the reload counters reach `want`.
    async fn wait_reloads(&self, want: (u64, u64)) {
        wait_until(
            || async { self.reloads() == want },
            || format!("{:?}", self.reloads()),
        )
        .await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn wait_until<F: Future<Output = bool>>(
    mut done: impl FnMut() -> F,
    what: impl Fn() -> String,
) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not reached in 30 s: {}", what());
}

#[tokio::test]
async fn fragments_concatenate_and_each_route_is_decided_where_it_was_declared() {
    let s = idps().await;
    let served = Served::start(&[
        ("00-base.yaml", &base(&s.one)),
        ("10-team-b.yaml", &team_b(&s.two)),
    ])
    .await;
    // Team B's route, with the base fragment's provider: its requirement decides (no `admin` scope).
    assert_eq!(served.status("/b/admin/x", &s.from_one).await, 403);
    // `b-admin` names only `one`: a token of team B's own provider is not accepted there.
    assert_eq!(served.status("/b/admin/x", &s.from_two).await, 401);
    assert_eq!(served.status("/b/x", &s.from_two).await, 200);
    // The base fragment's route uses team B's provider.
    assert_eq!(served.status("/two-only", &s.from_two).await, 200);
    assert_eq!(served.status("/two-only", &s.from_one).await, 401);
    // The default route: any authenticated identity.
    assert_eq!(served.status("/elsewhere", &s.from_one).await, 200);
}

#[tokio::test]
async fn an_added_a_changed_and_a_removed_fragment_each_reload() {
    let s = idps().await;
    let served = Served::start(&[
        ("00-base.yaml", &base(&s.one)),
        ("10-team-b.yaml", &team_b(&s.two)),
    ])
    .await;
    let hash = |served: &Served| served.server.app.reloads().hash();
    let first_hash = hash(&served);
    assert_eq!(
        first_hash,
        Some(hex16(
            &ConfigBytes::read(served.dir.path()).unwrap().digest()
        )),
        "portcullis_config_info's hash is over the fragments"
    );
    assert_eq!(
        served.status("/c/x", &s.from_one).await,
        200,
        "default route"
    );

    // Added: team C's route takes /c, for `two` only.
    let team_c = "routes:\n  - {name: c, match: {path_prefix: /c}, providers: [two]}\n";
    served.write("20-team-c.yaml", team_c);
    served.wait_reloads((1, 0)).await;
    assert_eq!(served.status("/c/x", &s.from_one).await, 401);
    assert_eq!(served.status("/c/x", &s.from_two).await, 200);
    assert_ne!(hash(&served), first_hash);

    // Changed: `c` now takes `one` too, and requires a scope nobody has.
    let stricter =
        "routes:\n  - {name: c, match: {path_prefix: /c}, require: {scopes: {all_of: [admin]}}}\n";
    served.write("20-team-c.yaml", stricter);
    served.wait_reloads((2, 0)).await;
    assert_eq!(served.status("/c/x", &s.from_one).await, 403);

    // Removed: `c` had requirements, so removing its fragment is a weakening, refused; `c` keeps
    // deciding.
    served.remove("20-team-c.yaml");
    served.wait_reloads((2, 1)).await;
    assert_eq!(served.status("/c/x", &s.from_one).await, 403);
    let refused = served.reloader.reload("test").await.unwrap_err();
    assert_eq!(
        refused.problems()[0].path,
        "routes[name=c]",
        "{:?}",
        refused.problems()
    );
    // Named in server.reload_allow_weakening (in the fragment that holds `server`), it goes.
    served.write(
        "00-base.yaml",
        &base(&s.one).replace(
            "  drain_seconds: 0",
            "  drain_seconds: 0\n  reload_allow_weakening: [c]",
        ),
    );
    wait_until(
        || async { served.status("/c/x", &s.from_one).await == 200 },
        || format!("{:?}", served.reloads()),
    )
    .await;
    assert_eq!(served.reloads().0, 3);

    // A removed fragment without requirements reloads at once: team B's provider goes with it, so the
    // base fragment's route that names it must go first (else the merge is refused, below).
    let reloads = served.reloads();
    served.remove("10-team-b.yaml");
    served.wait_reloads((reloads.0, reloads.1 + 1)).await;
    let refused = served.reloader.reload("test").await.unwrap_err();
    assert_eq!(
        refused
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["00-base.yaml: routes[0].providers[0]: unknown provider `two` (configured: one)"]
    );
    // Still served by the configuration in force: team B's routes decide.
    assert_eq!(served.status("/b/admin/x", &s.from_one).await, 403);
}

#[tokio::test]
async fn a_fragment_that_breaks_the_whole_is_refused_and_the_old_configuration_keeps_serving() {
    let s = idps().await;
    let served = Served::start(&[
        ("00-base.yaml", &base(&s.one)),
        ("10-team-b.yaml", &team_b(&s.two)),
    ])
    .await;
    let hash = served.server.app.reloads().hash();
    // Team D claims team B's route name and its admin path, and brings a second `mode`.
    let team_d = "
mode: permissive
server: {drain_seconds: 1}
routes:
  - {name: b-read, match: {path_prefix: /d}, allow_anonymous: true}
  - {name: d-admin, match: {path_prefix: /b/admin}, allow_anonymous: true}
";
    served.write("30-team-d.yaml", team_d);
    served.wait_reloads((0, 1)).await;
    assert_eq!(served.status("/b/admin/x", &s.from_one).await, 403);
    assert_eq!(
        served.server.app.reloads().hash(),
        hash,
        "the hash in force"
    );
    let problems: Vec<String> = served
        .reloader
        .reload("test")
        .await
        .unwrap_err()
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "30-team-d.yaml: server: is also in 00-base.yaml: every section but providers and routes may appear in one fragment only",
            "30-team-d.yaml: routes[0].name: route `b-read` is also named in 10-team-b.yaml: routes[1].name; a route name may be claimed by one fragment only",
            "30-team-d.yaml: routes[1].match: the same match (host, path, methods) as 10-team-b.yaml: routes[0].match; the first would take every request of this route, so two fragments may not claim it",
        ],
    );

    // Not YAML at all: refused too, named by its file.
    served.write("30-team-d.yaml", "routes: [\n");
    served.wait_reloads((0, 3)).await;
    let problems = served.reloader.reload("test").await.unwrap_err().problems();
    assert!(
        problems[0].path == "30-team-d.yaml: ."
            && problems[0].message.starts_with("not valid YAML"),
        "{problems:?}"
    );
    assert_eq!(served.status("/b/admin/x", &s.from_one).await, 403);
    assert_eq!(served.status("/d", &s.from_one).await, 200);

    // Fixed: it reloads.
    served.write(
        "30-team-d.yaml",
        "routes:\n  - {name: d, match: {path_prefix: /d}, require: {scopes: {all_of: [admin]}}}\n",
    );
    served.wait_reloads((1, 4)).await;
    assert_eq!(served.status("/d", &s.from_one).await, 403);
}

/// A ConfigMap volume: `KEY -> ..data/KEY`, `..data -> ..<timestamp>`; only the keys are fragments.
#[tokio::test]
async fn a_kubernetes_configmap_directory_is_read_once_per_key() {
    let s = idps().await;
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path();
    let version = mount.join("..2026_01_01_00_00_00.1");
    std::fs::create_dir(&version).unwrap();
    std::fs::write(version.join("00-base.yaml"), base(&s.one)).unwrap();
    std::fs::write(version.join("10-team-b.yaml"), team_b(&s.two)).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", mount.join("..data")).unwrap();
    for key in ["00-base.yaml", "10-team-b.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{key}"), mount.join(key)).unwrap();
    }
    // Neither a dotfile nor another kind of file is a fragment.
    std::fs::write(mount.join(".hidden.yaml"), "not: [a, fragment").unwrap();
    std::fs::write(mount.join("README.md"), "# team fragments").unwrap();
    let config = portcullis::io::load_config(mount).unwrap();
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["one", "two"], "each key read once");
    let routes: Vec<&str> = config
        .policy
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(routes, ["base-two-only", "b-admin", "b-read"]);

    // A `*.yml` file is refused, not silently skipped.
    std::fs::write(mount.join("20-team-c.yml"), "routes: []\n").unwrap();
    let error = portcullis::io::load_config(mount).unwrap_err().to_string();
    let problems = match portcullis::io::load_config(mount).unwrap_err() {
        portcullis::LoadError::Invalid(errors) => errors.0,
        other => panic!("{other}"),
    };
    assert_eq!(problems[0].path, "20-team-c.yml: .", "{error}");
    assert!(
        problems[0].message.contains("`*.yaml` files only"),
        "{error}"
    );
}

fn validate(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("validate-config")
        .args(extra)
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_all(dir: &Path, fragments: &[(&str, &str)]) {
    for (name, text) in fragments {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

const PROVIDER_A: &str = "providers:\n  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [x], jwks_uri: 'https://a.example/jwks'}\n";

#[test]
fn validate_config_on_a_directory_names_every_conflict_with_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write_all(
        dir.path(),
        &[
            (
                "00-base.yaml",
                &format!("mode: enforce\n{PROVIDER_A}routes:\n  - {{name: r, match: {{host: api.example.com, path: /x, methods: [GET, POST]}}}}\n"),
            ),
            (
                "10-team.yaml",
                "providers:\n  - {name: b, type: jwt, issuer: 'https://b.example/', audiences: [x], jwks_uri: 'https://b.example/jwks'}\nroutes:\n  - {name: t, match: {path_prefix: /t}, providers: [a, b]}\n",
            ),
        ],
    );
    let (code, stdout, stderr) = validate(dir.path(), &["--skip-secrets"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("valid (2 providers)"), "{stdout}");

    // Every kind of conflict, each naming both files and both paths.
    std::fs::write(
        dir.path().join("20-clash.yaml"),
        "mode: permissive
providers:
  - {name: a, type: jwt, issuer: 'https://other.example/', audiences: [x], jwks_uri: 'https://a.example/jwks'}
  - {name: c, type: jwt, issuer: 'https://b.example/', audiences: [x], jwks_uri: 'https://b.example/jwks'}
routes:
  - {name: t, match: {path_prefix: /other}}
  - {name: u, match: {host: API.example.com, path: /x, methods: [POST, GET]}}
  - {name: v, match: {host: api.example.com, path: /x, methods: [GET]}}
",
    )
    .unwrap();
    let (code, stdout, _) = validate(dir.path(), &["--skip-secrets", "--format", "json"]);
    assert_eq!(code, 64, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problems: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has = |path: &str, words: &[&str]| {
        problems
            .iter()
            .any(|(p, m)| p == path && words.iter().all(|w| m.contains(w)))
    };
    assert!(
        has("20-clash.yaml: mode", &["00-base.yaml"]),
        "{problems:?}"
    );
    assert!(
        has(
            "20-clash.yaml: providers[0].name",
            &["00-base.yaml: providers[0]"]
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "20-clash.yaml: providers[1].issuer",
            &["10-team.yaml: providers[0]"]
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "20-clash.yaml: routes[0].name",
            &["10-team.yaml: routes[0].name"]
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "20-clash.yaml: routes[1].match",
            &["00-base.yaml: routes[0].match"]
        ),
        "same host (case aside), path and methods (order aside): {problems:?}"
    );
    assert_eq!(
        problems.len(),
        5,
        "another set of methods is another match: {problems:?}"
    );

    // Text: the same lines, exit 64.
    let (code, stdout, _) = validate(dir.path(), &["--skip-secrets"]);
    assert_eq!(code, 64);
    assert!(
        stdout.contains("invalid configuration\n  20-clash.yaml: mode: is also in 00-base.yaml"),
        "{stdout}"
    );

    // `--config DIR` spells the same.
    std::fs::remove_file(dir.path().join("20-clash.yaml")).unwrap();
    let out = Command::new(BIN)
        .args(["validate-config", "--skip-secrets", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    // A problem found when the policy is compiled, and one found reading files, name their fragment too.
    std::fs::write(
        dir.path().join("30-late.yaml"),
        "providers:\n  - {name: k, type: jwt, issuer: 'https://k.example/', audiences: [x], jwks_file: /nonexistent/jwks.json}\nroutes:\n  - {name: late, match: {path_prefix: /late}, providers: [nobody]}\n",
    )
    .unwrap();
    let (code, stdout, _) = validate(dir.path(), &[]);
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains("  30-late.yaml: routes[0].providers"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  30-late.yaml: providers[0].jwks_file"),
        "{stdout}"
    );
}

#[test]
fn an_empty_directory_is_refused_and_explain_reads_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = validate(dir.path(), &[]);
    assert_eq!(code, 64, "{stdout}");
    assert!(stdout.contains("has no `*.yaml` files"), "{stdout}");

    let key = TestKey::rsa("k1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [key.jwk()]}).to_string()).unwrap();
    write_all(
        dir.path(),
        &[
            (
                "00-base.yaml",
                "providers:\n  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [x], jwks_uri: 'https://a.example/jwks'}\n",
            ),
            (
                "10-team.yaml",
                "routes:\n  - {name: team-admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [admin]}}}\n",
            ),
        ],
    );
    let token = key.token(&claims("https://a.example/", "x"));
    let out = Command::new(BIN)
        .args(["explain", "--config"])
        .arg(dir.path())
        .arg("--jwks")
        .arg(&jwks)
        .args(["--header", &format!("authorization: Bearer {token}")])
        .args(["--path", "/admin/x"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "denied: {stdout}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["explanation"]["route"]["route"], "team-admin");
}

fn hex16(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
