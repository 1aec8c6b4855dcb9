//! Hot reload of `serve --config FILE` (or `--config DIR`): a new configuration is read, validated and
//! built in full before it replaces the running one; a file that fails any of that leaves the running
//! configuration in force.
//!
//! - A directory's fragments (`crate::io::ConfigBytes`) are watched as one: the digest covers every
//!   fragment's name and content, so a changed, an added and a removed fragment each reload; the quiet
//!   period applies to the newest fragment's modification time. The merged configuration is what is
//!   validated, so a fragment that breaks the whole (a conflict with another team's route) is refused and
//!   the running configuration stays. Removing a fragment removes its routes: when they had
//!   requirements, that is a weakening like any other (below), refused unless the routes are named in
//!   `server.reload_allow_weakening`. A half-copied directory looks exactly like a team's fragment
//!   removed, so the safe default is kept: name the routes first, then remove the fragment.
//! - Triggers: [`Reloader::trigger`] (the binary calls it on SIGHUP) and [`Reloader::watch`], which reads the
//!   file every second and reloads when its SHA-256 changes. Reading the path each time follows whatever it
//!   points to now, so a Kubernetes ConfigMap update (the `..data` symlink of the mounted directory swapped
//!   to a new timestamped directory) is seen like an in-place edit, an editor's rename, or a `cp` over it.
//!   Polling a small file is cheap and has none of inotify's symlink, rename and lost-watch cases. A change
//!   is reloaded once the file reads the same twice in a row ([`SETTLE`] apart) and its modification time
//!   is at least [`QUIET`] old, so a write in progress (a copy or a config agent writing in chunks) is not
//!   taken for the new file. Writers should still replace the file atomically (write a temporary file
//!   beside it, then rename it over the old one), as the kubelet does for a ConfigMap.
//! - A half-written file can be valid YAML whose last route lost its `require` (or whose `default_route`
//!   was cut off). A reload that removes a route with requirements, empties a route's `require`, turns on
//!   its `allow_anonymous` or drops the `default_route` section is refused unless the file names the route
//!   in `server.reload_allow_weakening` ([`weakened`]).
//! - What reloads: providers, routes and everything else a [`Runtime`] holds. Providers whose configuration,
//!   secrets and files did not change keep their key sets and caches (`Runtime::build_after`).
//! - What does not: the `server` section (listen addresses, drain period, `tls` paths; only `allow_explain`
//!   and `ext_authz_timeout_ms` reload; the `tls` files themselves are reread by `server/tls`),
//!   `state` and `revocation` (the shared state outlives runtimes). A change to them refuses the whole file.
//! - Checks in flight finish on the runtime they started with; the previous runtime's background tasks
//!   (key set refreshers, key file reloaders) stop once the new runtime is in.
//! - Memory and time: between reloads the reloader keeps a [`Summary`] of the configuration in force (per
//!   route its name, a digest and the facts [`weakened`] reads), not the parsed file, and each reload
//!   frees the parsed new file once its runtime is built. Its comparisons look routes and providers up
//!   by name, so a reload of 100,000 routes costs about what loading them costs.
//! - Metrics: `portcullis_config_reloads_total{result}` and `portcullis_config_info{hash}` ([`ReloadStats`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::App;
use crate::clock::Clock;
use crate::config::resources::ResourceConfig;
use crate::config::{
    AnswersConfig, Config, ConfigErrors, HeadersConfig, IdentityTokenConfig, LoadError, Mode,
    Problem, RequireConfig, RevocationConfig, ServerConfig, Sources, StateConfig,
};
use crate::io::ConfigBytes;
use crate::runtime::Runtime;

/// How long a changed file must read the same before it is reloaded.
pub const SETTLE: Duration = Duration::from_millis(200);
/// How old a changed file's modification time must be before the watcher reloads it: a writer that pauses
/// for less than this between chunks is never read half-way.
pub const QUIET: Duration = Duration::from_secs(2);
/// How long a reload waits for the new runtime's new providers to load their keys before swapping it in
/// anyway (it then answers "unavailable" for them until they load, as at start).
const READY_WAIT: Duration = Duration::from_secs(10);

/// Reload counters and the hash of the configuration in force, for `/metrics`.
#[derive(Default)]
pub struct ReloadStats {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first 16 hex digits of the SHA-256 of the file in force (of a directory's fragments, see
    /// `ConfigBytes::digest`); `None` without a file (`--dev`, tests).
    hash: Mutex<Option<String>>,
}

// === impl ReloadStats ===

impl ReloadStats {
    /// Reloads that succeeded and that failed (the running configuration stayed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// The hash `portcullis_config_info` shows.
    pub fn hash(&self) -> Option<String> {
        self.hash.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn set_hash(&self, digest: &[u8; 32]) {
        if let Ok(mut hash) = self.hash.lock() {
            *hash = Some(short_hex(digest));
        }
    }
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read configuration `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration ({} problem{})", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Invalid(Vec<Problem>),
    /// Settings read once at start: a restart applies them.
    #[error("{} cannot change without a restart (the running configuration stays; restart to apply)", .0.join(", "))]
    NotReloadable(Vec<&'static str>),
    /// The file removes or relaxes route requirements without naming the routes in
    /// `server.reload_allow_weakening`: it may be a half-written file.
    #[error("the file weakens {} (a half-written file looks the same): if that is meant, name the route{} in server.reload_allow_weakening", .0.iter().map(|w| w.route.as_str()).collect::<Vec<_>>().join(", "), if .0.len() == 1 { "" } else { "s" })]
    Weakened(Vec<Weakening>),
}

/// One way a new file is laxer than the running one, on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weakening {
    /// The route's name (`default` for the default route).
    pub route: String,
    pub what: &'static str,
}

// === impl ReloadError ===

impl ReloadError {
    /// Every problem at the path of its field, as `validate-config` prints them.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ReloadError::Read { .. } => vec![Problem {
                path: ".".to_owned(),
                message: self.to_string(),
            }],
            ReloadError::Invalid(problems) => problems.clone(),
            ReloadError::NotReloadable(fields) => fields
                .iter()
                .map(|field| Problem {
                    path: (*field).to_owned(),
                    message: "cannot change without a restart".to_owned(),
                })
                .collect(),
            ReloadError::Weakened(weakenings) => weakenings
                .iter()
                .map(|w| Problem {
                    path: if w.route == crate::policy::DEFAULT_ROUTE {
                        "default_route".to_owned()
                    } else {
                        format!("routes[name={}]", w.route)
                    },
                    message: format!(
                        "{}: refused on reload unless server.reload_allow_weakening names `{}`",
                        w.what, w.route
                    ),
                })
                .collect(),
        }
    }
}

/// What a reload changed, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub providers_added: Vec<String>,
    pub providers_removed: Vec<String>,
    /// Rebuilt: their section, a secret or a file they read changed.
    pub providers_changed: Vec<String>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub routes_changed: Vec<String>,
    /// Other sections that changed (`mode`, `default_route`, `headers`, …).
    pub other: Vec<&'static str>,
}

/// What the reloader keeps of the configuration in force and the file digest the watcher compares
/// against.
struct Current {
    summary: Summary,
    /// The digest of the last file content tried (in force or refused): the watcher does not try the same
    /// content twice.
    tried: [u8; 32],
}

/// Reloads one server's configuration from its file.
pub struct Reloader {
    app: Arc<App>,
    path: PathBuf,
    secrets: Sources,
    clock: Clock,
    /// `serve --listen` / `--admin-listen`, which win over the file's addresses at every load.
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    /// Also keeps reloads one at a time.
    current: tokio::sync::Mutex<Current>,
    wake: Notify,
}

// === impl Reloader ===

impl Reloader {
    /// A reloader for `app`, serving `config` read from `path`. It keeps a [`Summary`] of `config`, not
    /// `config` itself.
    pub fn new(
        app: Arc<App>,
        path: impl Into<PathBuf>,
        config: Config,
        secrets: Sources,
        clock: Clock,
    ) -> Reloader {
        let path = path.into();
        let tried = match ConfigBytes::read(&path) {
            Ok(bytes) => {
                let digest = bytes.digest();
                app.reloads().set_hash(&digest);
                digest
            }
            Err(_) => [0; 32],
        };
        Reloader {
            app,
            path,
            secrets,
            clock,
            listen: None,
            admin_listen: None,
            current: tokio::sync::Mutex::new(Current {
                summary: Summary::of(&config),
                tried,
            }),
            wake: Notify::new(),
        }
    }

    /// The addresses given on the command line, which win over the file's at every reload.
    pub fn with_listen_overrides(
        mut self,
        listen: Option<SocketAddr>,
        admin_listen: Option<SocketAddr>,
    ) -> Reloader {
        self.listen = listen;
        self.admin_listen = admin_listen;
        self
    }

    /// Asks [`Reloader::watch`] to reload now, even if the file is unchanged (secrets are read again).
    /// Triggers that arrive while a reload runs make one more reload.
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// Reads the file every `every` and reloads when it changed; reloads on [`Reloader::trigger`]. Until
    /// `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(every) => false,
            };
            if forced {
                let _ = self.reload("signal").await;
                continue;
            }
            let Some(digest) = digest_of(&self.path).await else {
                // Missing for a moment while it is replaced; a lasting fault shows at the next SIGHUP.
                continue;
            };
            if digest == self.current.lock().await.tried {
                continue;
            }
            // Written in place, the file may be half new: wait until it reads the same twice, and until
            // nothing has written it for QUIET (tried again at the next tick until then).
            tokio::time::sleep(SETTLE).await;
            if digest_of(&self.path).await != Some(digest) {
                continue;
            }
            if !quiet(&self.path).await {
                continue;
            }
            let _ = self.reload("file changed").await;
        }
    }

    /// Reloads now: reads, validates and builds the file, and swaps the new runtime in; on any problem the
    /// running configuration stays. Logs the outcome and counts it either way.
    pub async fn reload(&self, trigger: &'static str) -> Result<Changes, ReloadError> {
        let mut current = self.current.lock().await;
        let result = self.try_reload(&mut current).await;
        let stats = self.app.reloads();
        match &result {
            Ok(changes) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                stats.set_hash(&current.tried);
                tracing::info!(
                    reload.trigger = trigger,
                    config.hash = %short_hex(&current.tried),
                    providers.added = ?changes.providers_added,
                    providers.removed = ?changes.providers_removed,
                    providers.changed = ?changes.providers_changed,
                    routes.added = ?changes.routes_added,
                    routes.removed = ?changes.routes_removed,
                    routes.changed = ?changes.routes_changed,
                    config.changed = ?changes.other,
                    "configuration reloaded"
                );
            }
            Err(error) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                for problem in error.problems() {
                    tracing::error!(config.field = %problem.path, "{problem}");
                }
                tracing::error!(
                    reload.trigger = trigger,
                    config.path = %self.path.display(),
                    %error,
                    "configuration reload refused; the running configuration stays"
                );
            }
        }
        result
    }

    async fn try_reload(&self, current: &mut Current) -> Result<Changes, ReloadError> {
        let bytes = read(&self.path).await.map_err(|error| match error {
            LoadError::Read { path, source } => ReloadError::Read { path, source },
            LoadError::Invalid(ConfigErrors(p)) => ReloadError::Invalid(p),
        })?;
        current.tried = bytes.digest();
        let text = bytes
            .into_text()
            .map_err(|problem| ReloadError::Invalid(vec![problem]))?;
        // The loader `serve` and `validate-config` use: the same list of problems.
        let check_env = crate::io::env(self.clock.clone(), self.secrets.clone());
        let (mut config, origins) =
            crate::runtime::load_located(text.source(), Some(&check_env), |_| Vec::new())
                .map_err(|ConfigErrors(p)| ReloadError::Invalid(p))?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = self.admin_listen {
            config.server.admin_listen = admin;
        }
        let summary = Summary::of(&config);
        let fixed = not_reloadable(&current.summary, &summary);
        if !fixed.is_empty() {
            return Err(ReloadError::NotReloadable(fixed));
        }
        let allowed = &config.server.reload_allow_weakening;
        let weakened: Vec<Weakening> = weakenings(&current.summary, &summary)
            .into_iter()
            .filter(|w| !allowed.contains(&w.route))
            .collect();
        if !weakened.is_empty() {
            return Err(ReloadError::Weakened(weakened));
        }
        let running = self.app.runtime();
        let env = self.app.env(self.secrets.clone(), self.clock.clone());
        let runtime = Runtime::build_after(&config, &env, Some(&running))
            .map_err(|ConfigErrors(p)| ReloadError::Invalid(p))?;
        // The admin API's secrets: a rotated file is read now, or the reload is refused (never the old,
        // possibly leaked, secret kept while the reload reports success).
        self.app
            .state()
            .reload_secrets(&config, &self.secrets)
            .map_err(|ConfigErrors(p)| ReloadError::Invalid(p))?;
        for warning in config.warnings() {
            let warning = origins.locate(warning);
            tracing::warn!(config.field = %warning.path, "{}", warning.message);
        }
        let changes = changes(
            &current.summary,
            &summary,
            runtime.authorizer().providers().kept(),
        );
        drop(running);
        // The parsed file is not needed once built: free it before the old runtime is let go.
        drop(config);
        self.app.replace_runtime(runtime, READY_WAIT).await;
        current.summary = summary;
        Ok(changes)
    }
}

/// The settings that differ and cannot change while serving.
fn not_reloadable(old: &Summary, new: &Summary) -> Vec<&'static str> {
    let mut fixed = Vec::new();
    let (a, b) = (&old.server, &new.server);
    if a.listen != b.listen {
        fixed.push("server.listen");
    }
    if a.admin_listen != b.admin_listen {
        fixed.push("server.admin_listen");
    }
    if a.drain_seconds != b.drain_seconds {
        fixed.push("server.drain_seconds");
    }
    // The listener's TLS is set up when serving starts; its files (not their paths) reload on their own.
    if a.tls != b.tls {
        fixed.push("server.tls");
    }
    // Anything else under `server` is read when serving starts, except `allow_explain` (a runtime setting)
    // and `ext_authz_timeout_ms` (only checked against the new file's timeouts).
    let mut rest = b.clone();
    rest.listen = a.listen;
    rest.admin_listen = a.admin_listen;
    rest.drain_seconds = a.drain_seconds;
    rest.tls = a.tls.clone();
    rest.allow_explain = a.allow_explain;
    rest.ext_authz_timeout_ms = a.ext_authz_timeout_ms;
    rest.reload_allow_weakening = a.reload_allow_weakening.clone();
    if rest != *a {
        fixed.push("server");
    }
    if old.state != new.state {
        fixed.push("state");
    }
    if old.revocation != new.revocation {
        fixed.push("revocation");
    }
    fixed
}

/// Whether the file (the newest of a directory's fragments) was last written at least [`QUIET`] ago. A
/// modification time in the future (a copy that kept a skewed clock's time) counts as quiet: a write in
/// progress stamps the current time.
async fn quiet(path: &Path) -> bool {
    let path = path.to_owned();
    let newest = tokio::task::spawn_blocking(move || crate::io::newest_modification(&path)).await;
    match newest.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(modified) => quiet_at(modified, std::time::SystemTime::now()),
        // Unreadable now: the read that follows reports it.
        Err(_) => true,
    }
}

fn quiet_at(modified: std::time::SystemTime, now: std::time::SystemTime) -> bool {
    now.duration_since(modified)
        .map_or(true, |age| age >= QUIET)
}

/// What the reloader keeps of a configuration for its comparisons ([`not_reloadable`], [`weakenings`],
/// [`changes`]): the restart-only sections, provider names, per route its name, a digest of its
/// configuration and the facts a weakening reads, and the other sections. Not the parsed routes: at
/// 100,000 routes those are about 84 MB, a summary a tenth of that.
pub struct Summary {
    server: ServerConfig,
    state: StateConfig,
    revocation: RevocationConfig,
    providers: Vec<String>,
    /// In file order.
    routes: Vec<RouteSummary>,
    default_route: DefaultRouteSummary,
    mode: Mode,
    claims_namespace: (Option<String>, Vec<String>),
    realm: String,
    headers: HeadersConfig,
    answers: AnswersConfig,
    resources: Vec<ResourceConfig>,
    identity_token: Option<IdentityTokenConfig>,
}

/// One route of a [`Summary`].
struct RouteSummary {
    name: Box<str>,
    /// Of the route's whole configuration: tells a changed route from an unchanged one.
    digest: Digest,
    has_requirements: bool,
    allow_anonymous: bool,
}

/// The default route of a [`Summary`].
struct DefaultRouteSummary {
    digest: Digest,
    /// The section is absent or says nothing.
    is_default: bool,
    has_requirements: bool,
    allow_anonymous: bool,
}

/// The first 16 bytes of the SHA-256 of a value's `Debug` form, which shows every field (config types
/// hold no maps with a random order and no redacted fields among routes).
type Digest = [u8; 16];

fn digest_of_value(value: &impl std::fmt::Debug) -> Digest {
    use sha2::Digest as _;
    struct Hashing(sha2::Sha256);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mut hashing = Hashing(sha2::Sha256::new());
    let _ = write!(hashing, "{value:?}");
    let full = hashing.0.finalize();
    let mut digest = [0; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

// === impl Summary ===

impl Summary {
    /// What the comparisons need of `config`.
    pub fn of(config: &Config) -> Summary {
        let none = RequireConfig::default();
        let policy = &config.policy;
        let default_route = &policy.default_route;
        Summary {
            server: config.server.clone(),
            state: config.state.clone(),
            revocation: config.revocation.clone(),
            providers: config.providers.iter().map(|p| p.name.clone()).collect(),
            routes: policy
                .routes
                .iter()
                .map(|route| RouteSummary {
                    name: route.name.as_str().into(),
                    digest: digest_of_value(route),
                    has_requirements: route.require != none,
                    allow_anonymous: route.allow_anonymous,
                })
                .collect(),
            default_route: DefaultRouteSummary {
                digest: digest_of_value(default_route),
                is_default: *default_route == Default::default(),
                has_requirements: default_route.require != none,
                allow_anonymous: default_route.allow_anonymous,
            },
            mode: policy.mode,
            claims_namespace: (
                policy.claims_namespace.clone(),
                policy.claims_namespace_aliases.clone(),
            ),
            realm: config.realm.clone(),
            headers: config.headers.clone(),
            answers: config.answers.clone(),
            resources: config.resources.clone(),
            identity_token: config.identity_token.clone(),
        }
    }

    /// The routes by name, for lookups that keep a diff linear.
    fn routes_by_name(&self) -> HashMap<&str, &RouteSummary> {
        self.routes.iter().map(|r| (&*r.name, r)).collect()
    }
}

/// How `new` is laxer than `old` route by route, the way a file cut short would be: a route with
/// requirements removed, a route's `require` emptied, `allow_anonymous` turned on, the `default_route`
/// section dropped. Other changes (new scopes, a changed mode) are ordinary edits.
pub fn weakened(old: &Config, new: &Config) -> Vec<Weakening> {
    weakenings(&Summary::of(old), &Summary::of(new))
}

/// [`weakened`] on summaries; linear in the number of routes.
fn weakenings(old: &Summary, new: &Summary) -> Vec<Weakening> {
    let mut found = Vec::new();
    let mut add = |route: &str, what: &'static str| {
        found.push(Weakening {
            route: route.to_owned(),
            what,
        });
    };
    let new_routes = new.routes_by_name();
    for route in &old.routes {
        // Removed, its requests go to a later route or the default route: laxer when it had requirements,
        // or when it needed a credential and the default route does not.
        let guarded =
            route.has_requirements || (!route.allow_anonymous && new.default_route.allow_anonymous);
        match new_routes.get(&*route.name) {
            None if guarded => add(&route.name, "the route is removed"),
            None => {}
            Some(now) => {
                if route.has_requirements && !now.has_requirements {
                    add(&route.name, "the route's requirements are removed");
                }
                if !route.allow_anonymous && now.allow_anonymous {
                    add(&route.name, "anonymous access is turned on");
                }
            }
        }
    }
    let (a, b) = (&old.default_route, &new.default_route);
    let default = crate::policy::DEFAULT_ROUTE;
    if !a.is_default && b.is_default {
        add(default, "the default_route section is removed");
    } else {
        if a.has_requirements && !b.has_requirements {
            add(default, "the default route's requirements are removed");
        }
        if !a.allow_anonymous && b.allow_anonymous {
            add(default, "anonymous access is turned on");
        }
    }
    found
}

/// What changed from `old` to `new`; `kept` names the providers the new runtime took over unchanged.
/// Linear in the number of routes and providers: the other side is looked up by name.
fn changes(old: &Summary, new: &Summary, kept: &[Arc<str>]) -> Changes {
    let mut c = Changes::default();
    let old_providers: HashSet<&str> = old.providers.iter().map(String::as_str).collect();
    let new_providers: HashSet<&str> = new.providers.iter().map(String::as_str).collect();
    let kept: HashSet<&str> = kept.iter().map(|k| &**k).collect();
    for name in &new.providers {
        if !old_providers.contains(name.as_str()) {
            c.providers_added.push(name.clone());
        } else if !kept.contains(name.as_str()) {
            c.providers_changed.push(name.clone());
        }
    }
    for name in &old.providers {
        if !new_providers.contains(name.as_str()) {
            c.providers_removed.push(name.clone());
        }
    }
    let (old_routes, new_routes) = (old.routes_by_name(), new.routes_by_name());
    for route in &new.routes {
        match old_routes.get(&*route.name) {
            None => c.routes_added.push(route.name.to_string()),
            Some(was) if was.digest != route.digest => {
                c.routes_changed.push(route.name.to_string())
            }
            Some(_) => {}
        }
    }
    for route in &old.routes {
        if !new_routes.contains_key(&*route.name) {
            c.routes_removed.push(route.name.to_string());
        }
    }
    let same_names_in_order = old
        .routes
        .iter()
        .map(|r| &r.name)
        .eq(new.routes.iter().map(|r| &r.name));
    let sections = [
        ("routes (order)", !same_names_in_order),
        ("mode", old.mode != new.mode),
        (
            "claims_namespace",
            old.claims_namespace != new.claims_namespace,
        ),
        (
            "default_route",
            old.default_route.digest != new.default_route.digest,
        ),
        ("realm", old.realm != new.realm),
        ("headers", old.headers != new.headers),
        ("answers", old.answers != new.answers),
        ("resources", old.resources != new.resources),
        ("identity_token", old.identity_token != new.identity_token),
        (
            "server.allow_explain",
            old.server.allow_explain != new.server.allow_explain,
        ),
    ];
    c.other = sections
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect();
    // Reordering routes changes which applies; say so only when nothing was added or removed.
    if !(c.routes_added.is_empty() && c.routes_removed.is_empty()) {
        c.other.retain(|s| *s != "routes (order)");
    }
    c
}

/// The file, or the directory's fragments, read off the runtime's threads.
async fn read(path: &Path) -> Result<ConfigBytes, LoadError> {
    let path = path.to_owned();
    let at = path.clone();
    tokio::task::spawn_blocking(move || ConfigBytes::read(&path))
        .await
        .unwrap_or_else(|e| {
            Err(LoadError::Read {
                path: at,
                source: std::io::Error::other(e),
            })
        })
}

async fn digest_of(path: &Path) -> Option<[u8; 32]> {
    Some(read(path).await.ok()?.digest())
}

fn short_hex(digest: &[u8; 32]) -> String {
    digest[..8]
        .iter()
        .fold(String::with_capacity(16), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml_str(yaml).unwrap()
    }

    const BASE: &str = "
providers:
  - {name: keys, type: api_key, keys: [{principal: k, sha256: '4c1c9c0bd8a3bbf25a8fd7a1dc1b9b06a3a6c4fce0c8e3f0b4e54b5ef64e0f0a'}]}
  - {name: anon, type: anonymous}
routes:
  - {name: a, match: {path_prefix: /a}}
  - {name: b, match: {path_prefix: /b}, allow_anonymous: true}
";

    #[test]
    fn listen_addresses_state_and_revocation_cannot_change() {
        let old = config(BASE);
        let new = config(&format!(
            "server: {{listen: '127.0.0.1:1', admin_listen: '127.0.0.1:2', drain_seconds: 1}}\nstate: {{backend: memory, key_prefix: other}}\n{BASE}"
        ));
        let fixed = not_reloadable(&Summary::of(&old), &Summary::of(&new));
        assert!(fixed.contains(&"server.listen"), "{fixed:?}");
        assert!(fixed.contains(&"server.admin_listen"), "{fixed:?}");
        assert!(fixed.contains(&"server.drain_seconds"), "{fixed:?}");
        let explain = config(&format!("server: {{allow_explain: true}}\n{BASE}"));
        assert!(not_reloadable(&Summary::of(&old), &Summary::of(&explain)).is_empty());
        let timeout = config(&format!("server: {{ext_authz_timeout_ms: 9000}}\n{BASE}"));
        assert!(not_reloadable(&Summary::of(&old), &Summary::of(&timeout)).is_empty());
        let tls = config(&format!(
            "server: {{tls: {{cert_file: /c.pem, key_file: /k.pem}}}}\n{BASE}"
        ));
        assert_eq!(
            not_reloadable(&Summary::of(&old), &Summary::of(&tls)),
            ["server.tls"]
        );
    }

    #[test]
    fn a_file_written_within_the_quiet_period_waits() {
        let now = std::time::SystemTime::now();
        assert!(!quiet_at(now, now));
        assert!(!quiet_at(now - QUIET / 2, now));
        assert!(quiet_at(now - QUIET, now));
        assert!(quiet_at(now - QUIET * 10, now));
        // A time in the future is no write in progress.
        assert!(quiet_at(now + QUIET, now));
    }

    #[test]
    fn a_cut_off_file_weakens_routes_and_ordinary_edits_do_not() {
        let full = config(
            "
providers:
  - {name: anon, type: anonymous}
default_route: {require: {principal: human}}
routes:
  - {name: read, match: {path_prefix: /read}, require: {scopes: {all_of: [read]}}}
  - {name: open, match: {path_prefix: /open}, allow_anonymous: true}
  - {name: admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [admin]}}}
",
        );
        let names = |w: Vec<Weakening>| -> Vec<(String, &'static str)> {
            w.into_iter().map(|w| (w.route, w.what)).collect()
        };
        // Cut inside the last route, before its `require`; the default route (written first) survives.
        let cut = config(
            "
providers:
  - {name: anon, type: anonymous}
default_route: {require: {principal: human}}
routes:
  - {name: read, match: {path_prefix: /read}, require: {scopes: {all_of: [read]}}}
  - {name: open, match: {path_prefix: /open}, allow_anonymous: true}
  - {name: admin, match: {path_prefix: /admin}}
",
        );
        assert_eq!(
            names(weakened(&full, &cut)),
            [("admin".to_owned(), "the route's requirements are removed")]
        );
        // Cut before the last route and the default route.
        let shorter = config(
            "
providers:
  - {name: anon, type: anonymous}
routes:
  - {name: read, match: {path_prefix: /read}, require: {scopes: {all_of: [read]}}}
  - {name: open, match: {path_prefix: /open}, allow_anonymous: true}
",
        );
        assert_eq!(
            names(weakened(&full, &shorter)),
            [
                ("admin".to_owned(), "the route is removed"),
                ("default".to_owned(), "the default_route section is removed"),
            ]
        );
        let anonymous = config(
            "
providers:
  - {name: anon, type: anonymous}
default_route: {require: {principal: human}}
routes:
  - {name: read, match: {path_prefix: /read}, allow_anonymous: true, require: {scopes: {all_of: [read]}}}
  - {name: open, match: {path_prefix: /open}, allow_anonymous: true}
  - {name: admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [other]}}}
",
        );
        assert_eq!(
            names(weakened(&full, &anonymous)),
            [("read".to_owned(), "anonymous access is turned on")]
        );
        // Stricter or different requirements, an added route, an open route removed: ordinary edits.
        let edited = config(
            "
providers:
  - {name: keys, type: api_key, keys: [{principal: k, sha256: '4c1c9c0bd8a3bbf25a8fd7a1dc1b9b06a3a6c4fce0c8e3f0b4e54b5ef64e0f0a'}]}
default_route: {require: {principal: machine}}
routes:
  - {name: read, match: {path_prefix: /read}, require: {scopes: {all_of: [read, more]}}}
  - {name: admin, match: {path_prefix: /admin}, require: {scopes: {all_of: [root]}}}
  - {name: new, match: {path_prefix: /new}}
",
        );
        assert!(weakened(&full, &edited).is_empty());
    }

    #[test]
    fn changes_name_what_was_added_removed_and_changed() {
        let old = config(BASE);
        let new = config(
            "
providers:
  - {name: keys, type: api_key, keys: [{principal: k, sha256: '4c1c9c0bd8a3bbf25a8fd7a1dc1b9b06a3a6c4fce0c8e3f0b4e54b5ef64e0f0a'}]}
  - {name: anon2, type: anonymous}
mode: permissive
routes:
  - {name: a, match: {path_prefix: /a2}}
  - {name: c, match: {path_prefix: /c}, allow_anonymous: true}
",
        );
        let (old, new) = (Summary::of(&old), Summary::of(&new));
        let c = changes(&old, &new, &[Arc::from("keys")]);
        assert_eq!(c.providers_added, ["anon2"]);
        assert_eq!(c.providers_removed, ["anon"]);
        assert!(c.providers_changed.is_empty());
        assert_eq!(c.routes_added, ["c"]);
        assert_eq!(c.routes_removed, ["b"]);
        assert_eq!(c.routes_changed, ["a"]);
        assert_eq!(c.other, ["mode"]);
        let rebuilt = changes(&old, &old, &[Arc::from("anon")]);
        assert_eq!(rebuilt.providers_changed, ["keys"]);
    }

    /// A reload of a 50,000-route file that renames its last route: found in linear time. Looking each old
    /// route up in the new list by linear search (as before) took minutes at 100,000 routes.
    #[test]
    fn a_50000_route_reload_is_diffed_in_linear_time() {
        const ROUTES: usize = 50_000;
        let routes = |renamed: Option<usize>| -> Vec<RouteSummary> {
            (0..ROUTES)
                .map(|i| RouteSummary {
                    name: match renamed {
                        Some(r) if r == i => format!("renamed-{i}"),
                        _ => format!("tenant-{i}"),
                    }
                    .into(),
                    digest: digest_of_value(&i),
                    has_requirements: true,
                    allow_anonymous: false,
                })
                .collect()
        };
        let old = Summary {
            routes: routes(None),
            ..Summary::of(&config(BASE))
        };
        let new = Summary {
            routes: routes(Some(ROUTES - 1)),
            ..Summary::of(&config(BASE))
        };
        let started = std::time::Instant::now();
        let weak = weakenings(&old, &new);
        let c = changes(&old, &new, &[]);
        let took = started.elapsed();
        let last = format!("tenant-{}", ROUTES - 1);
        assert_eq!(
            weak,
            [Weakening {
                route: last.clone(),
                what: "the route is removed"
            }]
        );
        assert_eq!(c.routes_added, [format!("renamed-{}", ROUTES - 1)]);
        assert_eq!(c.routes_removed, [last]);
        assert!(c.routes_changed.is_empty(), "{:?}", c.routes_changed);
        assert!(c.other.is_empty(), "{:?}", c.other);
        // Milliseconds in a debug build; the linear search took minutes. 30 s is a deadline no parallel
        // build makes this miss, and one the quadratic diff misses by far.
        eprintln!("diffed {ROUTES} routes in {took:?}");
        assert!(
            took < std::time::Duration::from_secs(30),
            "diffing {ROUTES} routes took {took:?}"
        );
    }

    #[test]
    fn stats_count_and_hash() {
        let stats = ReloadStats::default();
        assert_eq!(stats.counts(), (0, 0));
        assert_eq!(stats.hash(), None);
        stats.ok.fetch_add(2, Ordering::Relaxed);
        stats.set_hash(&[0xab; 32]);
        assert_eq!(stats.counts(), (2, 0));
        assert_eq!(stats.hash().as_deref(), Some("abababababababab"));
    }
}
