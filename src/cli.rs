//! The commands behind the `portcullis` binary: each takes its parsed arguments and returns the process
//! exit code. `main.rs` only parses the command line and dispatches here.
//!
//! Exit codes: 0 success (allowed); 1 a failure to act (cannot bind, cannot ask, no dev state to mint
//! with); 3 denied; 4 the server could not decide; 5 `check --expect` got another answer; 64 a
//! configuration that cannot be used (EX_USAGE, as linkerd does).

mod import_llama;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, LoadError, ProviderKind};
use crate::dev::{self, DevError, DevIssuer, OneOffIssuer, TokenAlgorithm, TokenClaims};
use crate::runtime;
use crate::server::tls::ServerTls;
use crate::server::{self, App, CheckService, Reloader};

/// Exit code for a configuration that cannot be used (EX_USAGE, as linkerd does).
const EXIT_CONFIG: u8 = 64;
/// Exit code of `check` when the request was denied.
const EXIT_DENIED: u8 = 3;
/// Exit code of `check` when the server answered that it could not decide.
const EXIT_UNDECIDED: u8 = 4;
/// Exit code of `check --expect` when the answer was not the expected one.
const EXIT_UNEXPECTED: u8 = 5;

/// `serve`: serve Check and the admin endpoints until SIGTERM or Ctrl-C.
pub fn serve(args: ServeArgs) -> ExitCode {
    runtime().block_on(async { report(serve_until_signal(args).await) })
}

/// `token`: print a token the `serve --dev` server accepts (or, with `--iss`, one for another issuer).
pub fn token(args: &TokenArgs) -> ExitCode {
    report(mint(args))
}

/// `bench`: the load generator, with a word on stderr when this is a debug build (its figures measure the
/// unoptimised code, not portcullis).
pub fn bench(args: portcullis_bench::BenchArgs) -> ExitCode {
    let measures = args.serve_noop.is_none() && !args.setup_only;
    if cfg!(debug_assertions) && measures {
        eprintln!(
            "warning: this is a debug build: its figures are meaningless (unoptimised code runs many times \
             slower). Build and run a release binary: cargo build --release && target/release/portcullis bench ..."
        );
    }
    portcullis_bench::main(args, validate_bench_config)
}

/// The bench's check of the configuration it writes: the library's own parsing and validation (the
/// bench package does not link the library).
fn validate_bench_config(yaml: &str) -> Result<(), String> {
    match Config::from_yaml_str(yaml) {
        Ok(_) => Ok(()),
        Err(errors) => Err(errors
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// `hash-key`: print an API key's digest.
pub fn hash_key(args: HashKeyArgs) -> ExitCode {
    report(digest_key(args))
}

/// `check`: send one Check to a running server.
pub fn check(args: CheckArgs) -> ExitCode {
    runtime().block_on(ask_server(args))
}

/// `revoke`: add (or with `--undo`, remove) a denylist entry through a server's admin API.
pub fn revoke(args: RevokeArgs) -> ExitCode {
    runtime().block_on(async { report(ask_admin(args).await) })
}

/// `explain`: decide a request offline, through the same Check service as the server.
pub fn explain(args: ExplainArgs) -> ExitCode {
    runtime().block_on(explain_offline(args))
}

/// `import`: print a portcullis configuration equivalent to another tool's.
pub fn import(args: &ImportArgs) -> ExitCode {
    match &args.from {
        ImportFrom::LlamaStack { file } => import_llama_stack(file),
    }
}

/// `config`: facts about the configuration file itself.
pub fn config(args: &ConfigArgs) -> ExitCode {
    match &args.command {
        ConfigCommand::Schema { output } => {
            let mut text = serde_json::to_string_pretty(&crate::config::schema::schema())
                .expect("a JSON value serializes");
            text.push('\n');
            let Some(path) = output else {
                print!("{text}");
                return ExitCode::SUCCESS;
            };
            match std::fs::write(path, text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write `{}`: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the JSON Schema (draft 2020-12) of the configuration file, generated from the configuration
    /// types: every key with its type, default and description; unknown keys are refused. For editors
    /// (`# yaml-language-server: $schema=…`) and CI; `validate-config` checks what a schema cannot (URLs,
    /// references between sections, files, secrets).
    Schema {
        /// Write the schema to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    from: ImportFrom,
}

#[derive(Subcommand)]
enum ImportFrom {
    /// A llama-stack run configuration (`server.auth`): prints the portcullis configuration on stdout,
    /// what could not be carried over on stderr. Exits 64 when it cannot be converted.
    LlamaStack {
        /// The llama-stack run configuration (YAML).
        file: PathBuf,
    },
}

fn import_llama_stack(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let imported = match import_llama::convert(&text) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // What is printed must pass validate-config (secrets aside: they live in the environment).
    let problems = match Config::from_yaml_str(&imported.yaml) {
        Ok(config) => runtime::check(&config, None),
        Err(errors) => errors.0,
    };
    if !problems.is_empty() {
        eprintln!(
            "error: {}: the converted configuration is not valid:",
            file.display()
        );
        for problem in problems {
            eprintln!("  {problem}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    print!("{}", imported.yaml);
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    ExitCode::SUCCESS
}

#[derive(Args)]
pub struct HashKeyArgs {
    /// The key; omit it to read one line from standard input.
    key: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The configuration file (YAML), or a directory whose `*.yaml` files are fragments of one
    /// configuration, merged in name order (`providers` and `routes` concatenate; see the book's
    /// "Configuration in fragments").
    #[arg(long, required_unless_present = "dev", conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Run on the embedded default: a built-in development issuer, no IdP account needed.
    #[arg(long)]
    dev: bool,
    /// gRPC listen address; overrides `server.listen` (dev default 127.0.0.1:9001).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP listen address; overrides `server.admin_listen` (dev default 127.0.0.1:9002).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// HTTP forward-auth listen address; overrides `server.http_listen` (the configuration must set
    /// `server.http_mode`). Not with `--dev`.
    #[arg(long, conflicts_with = "dev")]
    http_listen: Option<SocketAddr>,
    /// Let `--dev` listen on a non-loopback address. The dev server signs tokens for anyone who asks its
    /// admin port and trusts them: never expose it. Without this flag a non-loopback address is refused.
    #[arg(long, requires = "dev")]
    dangerous_dev_non_loopback: bool,
    /// Where `--dev` keeps its signing key (made on first start); `portcullis token` needs the same directory.
    #[arg(long, default_value = dev::DEFAULT_STATE_DIR, env = dev::STATE_DIR_ENV)]
    state_dir: PathBuf,
}

#[derive(Args)]
pub struct TokenArgs {
    /// The subject (`sub`).
    #[arg(long, default_value = "dev-user")]
    sub: String,
    /// Space-separated scopes (`scope`).
    #[arg(long, default_value = "")]
    scope: String,
    /// Space-separated Auth0-style RBAC permissions (`permissions` array).
    #[arg(long)]
    permissions: Option<String>,
    /// The audience (`aud`): the dev server's (`portcullis-dev`) unless given; required with `--iss`.
    #[arg(long)]
    aud: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// The issuer (`iss`) of a token for another provider than the dev server's (e.g. a shipped example's,
    /// to try with `explain --jwks`): signed with a key made for this run, which only the key set written
    /// by `--write-jwks` verifies. Without it, the token is the dev server's, signed with its key.
    #[arg(long, value_name = "ISSUER", requires = "write_jwks")]
    iss: Option<String>,
    /// The signing algorithm: the dev server's key is ES256 (the only choice without `--iss`); with
    /// `--iss`, RS256 unless given (what a `jwt` provider accepts by default).
    #[arg(long, value_enum, ignore_case = true)]
    alg: Option<TokenAlgorithm>,
    /// Write the public key set that verifies the token to FILE, adding to the keys already there (so
    /// tokens from several runs verify against one file), for `explain --jwks FILE`.
    #[arg(long, value_name = "FILE")]
    write_jwks: Option<PathBuf>,
    /// An extra claim, `name=value`; the value is read as JSON when it parses, else as a string. The claims
    /// the flags set (`iss`, `sub`, `aud`, `iat`, `exp`) are refused here: use the flag.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// The dev server's state directory: the one `serve --dev` was given, `.portcullis-dev` in the
    /// directory it was started from by default. `token` reads it and never creates it.
    #[arg(long, default_value = dev::DEFAULT_STATE_DIR, env = dev::STATE_DIR_ENV)]
    state_dir: PathBuf,
}

/// The request to decide, as Envoy would describe it.
#[derive(Args)]
pub struct RequestArgs {
    /// A request header, `name: value`; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request path, with its query string.
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, default_value = "localhost")]
    host: String,
    /// An Envoy per-route context extension, `key=value` (selects routes that match on it); repeatable.
    #[arg(long = "context-extension", value_name = "KEY=VALUE")]
    context_extensions: Vec<String>,
}

// === impl RequestArgs ===

impl RequestArgs {
    /// The request, asking for its explanation when `explain`.
    pub fn ask<'a>(
        &'a self,
        addr: &'a str,
        headers: &'a mut Vec<String>,
        explain: bool,
    ) -> client::Ask<'a> {
        headers.extend(self.headers.iter().cloned());
        if explain {
            headers.push(format!("{}: true", crate::server::EXPLAIN_HEADER));
        }
        client::Ask {
            addr,
            headers,
            method: &self.method,
            path: &self.path,
            host: &self.host,
            context_extensions: &self.context_extensions,
        }
    }
}

#[derive(Args)]
pub struct CheckArgs {
    /// The portcullis gRPC address; `https://` for a server with `server.tls`.
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    addr: String,
    /// With an https:// address: the CA (PEM) that signed the server's certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// With an https:// address: a client certificate (PEM), for a server with `server.tls.client_ca_file`.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    request: RequestArgs,
    /// Ask the server for the decision's explanation (needs `server.allow_explain` on the server).
    #[arg(long)]
    explain: bool,
    /// Exit 0 only when the answer is this one (5 when it is another, 1 when the server could not be
    /// asked): for smoke tests such as `helm test`, where an unauthenticated request must be denied.
    #[arg(long, value_enum)]
    expect: Option<Expect>,
    /// With `--expect denied`: exit 0 only when the denial's OAuth error code (the JSON body's `error`,
    /// as in `WWW-Authenticate`) is this one, e.g. `invalid_token` for a forged token that a provider
    /// refused, where a missing credential would be `unauthorized`.
    #[arg(long, requires = "expect", value_name = "CODE")]
    expect_error: Option<String>,
    /// First ask `grpc.health.v1` for the overall service (""), SERVING only once every provider can
    /// decide: exit 4 when it is not serving, without sending the Check.
    #[arg(long)]
    ready: bool,
}

/// The answer `check --expect` wants.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    Allowed,
    Denied,
    /// Allowed or denied: the server decided (not "could not decide").
    Decided,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["sub", "jti", "sid", "client_id"])))]
pub struct RevokeArgs {
    /// The admin port's base URL, e.g. `http://127.0.0.1:9002`.
    #[arg(long)]
    admin: String,
    /// Refused: a secret on the command line shows in `ps` and in shell history. The secret comes from
    /// PORTCULLIS_ADMIN_SECRET only.
    #[arg(long, hide = true)]
    secret: Option<String>,
    /// Revoke every token of this subject issued until now.
    #[arg(long)]
    sub: Option<String>,
    /// Revoke the token with this `jti`.
    #[arg(long)]
    jti: Option<String>,
    /// Revoke every token of this session (`sid`).
    #[arg(long)]
    sid: Option<String>,
    /// Revoke every token of this OAuth2 client (`client_id` / `azp`).
    #[arg(long)]
    client_id: Option<String>,
    /// Only tokens of this issuer (`iss`).
    #[arg(long)]
    issuer: Option<String>,
    /// How long the entry lives, in seconds (default: the server's `revocation.default_ttl_seconds`).
    #[arg(long)]
    ttl: Option<u64>,
    /// Remove the entries of this kind and value instead.
    #[arg(long)]
    undo: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The configuration file (YAML), or a directory whose `*.yaml` files are fragments of one
    /// configuration, merged in name order (`providers` and `routes` concatenate; see the book's
    /// "Configuration in fragments").
    #[arg(long)]
    config: PathBuf,
    /// Use this JWKS file for every `jwt` provider instead of fetching keys.
    #[arg(long)]
    jwks: Option<PathBuf>,
    #[command(flatten)]
    request: RequestArgs,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The configuration file (YAML), or a directory whose `*.yaml` files are fragments of one
    /// configuration, merged in name order (`providers` and `routes` concatenate; see the book's
    /// "Configuration in fragments").
    #[arg(required_unless_present = "config", value_name = "FILE|DIR")]
    file: Option<PathBuf>,
    /// The same as the positional FILE|DIR, spelled as `serve` and `explain` spell it.
    #[arg(long, conflicts_with = "file", value_name = "FILE|DIR")]
    config: Option<PathBuf>,
    /// Do not check that `{env:}`/`{file:}` secret references resolve on this machine, nor read the files
    /// the server reads (`server.tls`, key sets, API key files, CA files: they usually exist only where the
    /// server runs).
    #[arg(long)]
    skip_secrets: bool,
    /// `text` (the default: a line per problem), or `json`: one document on stdout,
    /// `{"file", "valid", "problems": [{"path", "message"}], "warnings": [...]}`, for CI and editors.
    #[arg(long, value_enum, default_value = "text")]
    format: ValidateFormat,
    /// Warnings (dangerous settings) fail the check too (exit 64), for CI.
    #[arg(long)]
    strict: bool,
}

/// How `validate-config` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Prints an error chain and picks the exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let errors = err.downcast_ref::<ConfigErrors>().or_else(|| {
                match err.downcast_ref::<LoadError>() {
                    Some(LoadError::Invalid(errors)) => Some(errors),
                    _ => None,
                }
            });
            if let Some(errors) = errors {
                eprintln!("error: {err}");
                for problem in &errors.0 {
                    eprintln!("  {problem}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            if err.downcast_ref::<LoadError>().is_some() {
                eprintln!("error: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration as `serve` and `validate-config` read it (a file, or a directory's fragments): parsed
/// and checked by the loader a reload uses too ([`runtime::load`]), plus, when files are read (`env`), the
/// listener's own certificate and key (`server.tls`). Every problem in one list, before any port is
/// bound. With it, where each part came from, so that a warning names its fragment.
fn load_file(
    path: &Path,
    env: Option<&portcullis_core::Env>,
) -> Result<(Config, crate::config::Origins), LoadError> {
    let text = crate::io::read_config_text(path)?;
    let server_tls = |config: &Config| match (&config.server.tls, env) {
        (Some(tls), Some(_)) => ServerTls::check(tls),
        _ => Vec::new(),
    };
    Ok(runtime::load_located(text.source(), env, server_tls)?)
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    crate::io::load_config(path).map_err(|e| match e {
        LoadError::Invalid(errors) => anyhow::Error::new(errors),
        read => anyhow::Error::new(read),
    })
}

/// `validate-config`: parse, compile the policy, resolve secrets (unless skipped); every problem with its
/// path. A file that cannot be read is a problem too: exit 64 either way.
pub fn validate_config(args: &ValidateArgs) -> ExitCode {
    let Some(file) = args.file.as_deref().or(args.config.as_deref()) else {
        eprintln!("error: name the configuration: validate-config FILE|DIR");
        return ExitCode::from(EXIT_CONFIG);
    };
    let env = crate::io::env(Clock::system(), crate::io::sources());
    let loaded = load_file(file, (!args.skip_secrets).then_some(&env));
    let (config, mut problems, warnings) = match loaded {
        Ok((config, origins)) => {
            let warnings = config
                .warnings()
                .into_iter()
                .map(|w| origins.locate(w))
                .collect();
            (Some(config), Vec::new(), warnings)
        }
        Err(LoadError::Invalid(errors)) => (None, errors.0, Vec::new()),
        Err(read @ LoadError::Read { .. }) => (
            None,
            vec![crate::config::Problem {
                path: ".".to_owned(),
                message: read.to_string(),
            }],
            Vec::new(),
        ),
    };
    problems.dedup();
    let failed = !problems.is_empty() || (args.strict && !warnings.is_empty());
    match args.format {
        ValidateFormat::Json => {
            let list = |items: &[crate::config::Problem]| -> Vec<serde_json::Value> {
                items
                    .iter()
                    .map(|p| serde_json::json!({"path": p.path, "message": p.message}))
                    .collect()
            };
            let document = serde_json::json!({
                "file": file.display().to_string(),
                "valid": !failed,
                "problems": list(&problems),
                "warnings": list(&warnings),
                "providers": config.as_ref().map(|c| c.providers.len()),
            });
            println!("{document:#}");
        }
        ValidateFormat::Text => {
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            match (&config, failed) {
                (Some(config), false) => return valid(file, config),
                _ if problems.is_empty() => println!(
                    "{}: invalid configuration: {} warning{} (--strict)",
                    file.display(),
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" }
                ),
                _ => {
                    println!("{}: invalid configuration", file.display());
                    for problem in &problems {
                        println!("  {problem}");
                    }
                }
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

fn valid(file: &Path, config: &Config) -> ExitCode {
    println!(
        "{}: valid ({} provider{})",
        file.display(),
        config.providers.len(),
        if config.providers.len() == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

async fn serve_until_signal(args: ServeArgs) -> anyhow::Result<()> {
    // Where each part of the configuration came from (`--config DIR`), for its warnings.
    let mut origins = crate::config::Origins::default();
    let (config, dev, grpc, admin, tls) = if args.dev {
        let listen = args
            .listen
            .unwrap_or_else(|| dev::DEV_LISTEN.parse().expect("valid"));
        let admin_addr = args
            .admin_listen
            .unwrap_or_else(|| dev::DEV_ADMIN_LISTEN.parse().expect("valid"));
        for (addr, flag) in [(listen, "--listen"), (admin_addr, "--admin-listen")] {
            if !addr.ip().is_loopback() && !args.dangerous_dev_non_loopback {
                anyhow::bail!(
                    "{flag} {addr}: `serve --dev` only listens on loopback (its tokens are for anyone who asks); add --dangerous-dev-non-loopback to expose it anyway"
                );
            }
        }
        let admin = bind(admin_addr, "admin").await?;
        let admin_addr = admin.local_addr()?;
        let grpc = bind(listen, "gRPC").await?;
        let mut issuer = DevIssuer::load_or_create(&args.state_dir, &dev::issuer_for(admin_addr))?;
        issuer.set_issuer(dev::issuer_for(admin_addr))?;
        let config = issuer.config(grpc.local_addr()?, admin_addr);
        print_dev_banner(&config, &issuer, &args.state_dir);
        (config, Some(Arc::new(issuer)), grpc, admin, None)
    } else {
        let path = args
            .config
            .as_deref()
            .expect("clap requires --config without --dev");
        let mut config;
        (config, origins) = load_file(
            path,
            Some(&crate::io::env(Clock::system(), crate::io::sources())),
        )?;
        if let Some(listen) = args.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = args.admin_listen {
            config.server.admin_listen = admin;
        }
        if let Some(http) = args.http_listen {
            anyhow::ensure!(
                config.server.http_mode.is_some(),
                "--http-listen {http}: the configuration does not set server.http_mode (envoy, forwarded or nginx)"
            );
            config.server.http_listen = Some(http);
        }
        // A certificate that does not load refuses the start (exit 64, field paths), before binding.
        let tls = match &config.server.tls {
            Some(tls) => Some(Arc::new(ServerTls::load(tls).map_err(ConfigErrors)?)),
            None => None,
        };
        let grpc = bind(config.server.listen, "gRPC").await?;
        let admin = bind(config.server.admin_listen, "admin").await?;
        (config, None, grpc, admin, tls)
    };
    let reload_from = args.config.filter(|_| !args.dev);

    let http = match config.server.http_listen {
        Some(addr) => Some(bind(addr, "HTTP forward auth").await?),
        None => None,
    };

    let app = Arc::new(App::from_config(
        &config,
        dev,
        crate::io::sources(),
        Clock::system(),
    )?);
    for warning in config.warnings() {
        let warning = origins.locate(warning);
        tracing::warn!(config.field = %warning.path, "{}", warning.message);
    }
    let http_addr = http.as_ref().map(TcpListener::local_addr).transpose()?;
    tracing::info!(
        grpc.listen = %grpc.local_addr()?,
        grpc.tls = tls.is_some(),
        admin.listen = %admin.local_addr()?,
        http.listen = http_addr.map(|a| a.to_string()).unwrap_or_default(),
        http.mode = config.server.http_mode.map_or("", |m| m.as_str()),
        providers = config.providers.len(),
        state.backend = app.state().backend_name(),
        "portcullis serving"
    );
    let stop_reloading = CancellationToken::new();
    if let Some(path) = reload_from {
        let reloader = Reloader::new(
            Arc::clone(&app),
            path,
            config,
            crate::io::sources(),
            Clock::system(),
        )
        .with_listen_overrides(args.listen, args.admin_listen);
        let reloader = Arc::new(reloader);
        tokio::spawn(Arc::clone(&reloader).watch(RELOAD_POLL, stop_reloading.clone()));
        // Registered before serving: until then a SIGHUP would end the process (its default action).
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(reload_on_sighup(hangups, reloader, stop_reloading.clone()));
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot listen for SIGHUP; the configuration reloads on file changes only"
            ),
        }
    } else {
        // Built into the runtime: the parsed file is not needed while serving.
        drop(config);
    }
    let listeners = server::Listeners { grpc, admin, http };
    let served = server::run_with_tls(app, listeners, tls, shutdown_signal()).await;
    stop_reloading.cancel();
    served?;
    Ok(())
}

/// How often `serve --config` reads its file for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads the configuration on every SIGHUP, until `stop`.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    reloader: Arc<Reloader>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangups.recv() => match received {
                Some(()) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    reloader.trigger();
                }
                None => return,
            },
        }
    }
}

fn print_dev_banner(config: &Config, issuer: &DevIssuer, state_dir: &Path) {
    eprintln!(
        "portcullis dev server (development only)\n  \
         gRPC Check:  {grpc}\n  \
         admin:       http://{admin}  (/healthz /readyz /metrics)\n  \
         issuer:      {iss}  (keys in {state})\n  \
         audience:    {aud}\n\n  \
         mint a token:   portcullis token{state_flag} --sub alice --scope \"read:x write:x\"\n  \
         ask a check:    portcullis check --addr http://{grpc} --header \"authorization: Bearer $TOKEN\"\n",
        grpc = config.server.listen,
        admin = config.server.admin_listen,
        iss = issuer.issuer(),
        state = state_dir.display(),
        aud = dev::DEV_AUDIENCE,
        state_flag = state_flag(state_dir),
    );
}

/// The `--state-dir` a `token` run needs to find this dev server's key, whatever its working directory:
/// none for the default when the environment names no other.
fn state_flag(state_dir: &Path) -> String {
    let default = state_dir == Path::new(dev::DEFAULT_STATE_DIR)
        && std::env::var_os(dev::STATE_DIR_ENV).is_none();
    if default {
        return String::new();
    }
    let absolute = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    format!(" --state-dir {}", absolute.display())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The claims the `token` flags set, and the flag to use instead of `--claim NAME=…`.
const FLAG_CLAIMS: [(&str, &str); 5] = [
    ("iss", "--iss"),
    ("sub", "--sub"),
    ("aud", "--aud"),
    ("iat", "--ttl"),
    ("exp", "--ttl"),
];

fn mint(args: &TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.ttl > 0, "--ttl must be positive");
    let mut extra = Map::new();
    if let Some(permissions) = &args.permissions {
        extra.insert(
            "permissions".into(),
            permissions.split_whitespace().map(Value::from).collect(),
        );
    }
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .with_context(|| format!("--claim `{claim}` is not NAME=VALUE"))?;
        if let Some((_, flag)) = FLAG_CLAIMS.iter().find(|(claim, _)| *claim == name) {
            anyhow::bail!("--claim {name}=…: `{name}` is set by {flag}; use {flag} instead");
        }
        let taken = match name {
            "scope" => (!args.scope.trim().is_empty()).then_some("--scope"),
            "permissions" => args.permissions.as_ref().map(|_| "--permissions"),
            _ => None,
        };
        if let Some(flag) = taken {
            anyhow::bail!("--claim {name}=… and {flag} both set `{name}`: give one");
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        extra.insert(name.to_owned(), value);
    }
    let claims = |audience| TokenClaims {
        sub: &args.sub,
        scopes: &args.scope,
        audience,
        ttl_seconds: args.ttl,
        now: Clock::system().now(),
        extra,
    };
    let (token, jwk) = match &args.iss {
        Some(iss) => {
            let aud = args.aud.as_deref().context(
                "--iss needs --aud: the audience the provider expects (one of its `audiences`)",
            )?;
            let issuer = OneOffIssuer::generate(iss, args.alg.unwrap_or(TokenAlgorithm::Rs256))?;
            (issuer.mint(claims(aud))?, issuer.jwk().clone())
        }
        None => {
            if let Some(alg) = args.alg.filter(|alg| *alg != TokenAlgorithm::Es256) {
                anyhow::bail!(
                    "--alg {}: the dev server's key is ES256. For a token another provider accepts, add \
                     --iss ISSUER --aud AUDIENCE --write-jwks FILE (a key made for this run)",
                    alg.as_str()
                );
            }
            let issuer = open_dev_state(&args.state_dir)?;
            let aud = args.aud.as_deref().unwrap_or(dev::DEV_AUDIENCE);
            (issuer.mint(claims(aud))?, issuer.jwk())
        }
    };
    if let Some(path) = &args.write_jwks {
        dev::add_to_key_set(path, &jwk)?;
    }
    println!("{token}");
    Ok(())
}

/// The dev server's issuer from its state directory; when there is none, where it would be and how to
/// point at it (a key made here would sign tokens every dev server refuses as `unknown_kid`).
fn open_dev_state(state_dir: &Path) -> anyhow::Result<DevIssuer> {
    match DevIssuer::open(state_dir) {
        Err(DevError::NoState(dir)) => {
            let shown = std::path::absolute(&dir).unwrap_or(dir);
            anyhow::bail!(
                "no dev server state in `{shown}`: `serve --dev` makes its signing key there on first start, \
                 and `token` does not make one (a key of its own would sign tokens the dev server refuses as \
                 unknown_kid).\n  \
                 The dev server keeps its state in `{default}/` under the directory it was started from, or in \
                 the directory its --state-dir (or {env}) names.\n  \
                 Run `portcullis token` from that directory, or point at the state: \
                 portcullis token --state-dir /path/to/{default} (or {env}=/path/to/{default}).\n  \
                 For a token another configuration accepts (e.g. an example's provider, tried with \
                 `explain --jwks`): portcullis token --iss ISSUER --aud AUDIENCE --write-jwks FILE",
                shown = shown.display(),
                default = dev::DEFAULT_STATE_DIR,
                env = dev::STATE_DIR_ENV,
            )
        }
        opened => Ok(opened?),
    }
}

fn digest_key(args: HashKeyArgs) -> anyhow::Result<()> {
    let key = match args.key {
        Some(key) => key,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the key from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    anyhow::ensure!(!key.is_empty(), "the key is empty");
    println!("{}", crate::providers::api_key::hash_key(&key));
    Ok(())
}

async fn ask_server(args: CheckArgs) -> ExitCode {
    let mut headers = Vec::new();
    let ask = args.request.ask(&args.addr, &mut headers, args.explain);
    let tls = client::ClientTls {
        ca_file: args.ca_file.clone(),
        cert_file: args.cert_file.clone(),
        key_file: args.key_file.clone(),
    };
    if args.ready {
        match client::serving(&args.addr, &tls).await {
            Ok(true) => {}
            Ok(false) => {
                eprintln!(
                    "error: {} is not serving (health of service \"\")",
                    args.addr
                );
                return ExitCode::from(EXIT_UNDECIDED);
            }
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let answer = client::ask_over(&ask, &tls).await;
    let Some(expect) = args.expect else {
        return print_answer(answer);
    };
    let (verdict, error) = match &answer {
        Ok((verdict, json)) => (Some(*verdict), oauth_error(json)),
        Err(_) => (None, None),
    };
    let code = print_answer(answer);
    use client::Verdict;
    let error_as_expected = args.expect_error.is_none() || args.expect_error == error;
    match (expect, verdict) {
        (_, None) => code,
        (Expect::Denied, Some(Verdict::Denied)) if error_as_expected => ExitCode::SUCCESS,
        (Expect::Allowed, Some(Verdict::Allowed))
        | (Expect::Decided, Some(Verdict::Allowed | Verdict::Denied))
            if args.expect_error.is_none() =>
        {
            ExitCode::SUCCESS
        }
        (_, Some(_)) => ExitCode::from(EXIT_UNEXPECTED),
    }
}

/// The OAuth error code of a denial: `error` in its JSON body.
fn oauth_error(answer: &Value) -> Option<String> {
    let body: Value = serde_json::from_str(answer.get("body")?.as_str()?).ok()?;
    Some(body.get("error")?.as_str()?.to_owned())
}

fn print_answer(
    answer: Result<(client::Verdict, serde_json::Value), client::AskError>,
) -> ExitCode {
    match answer {
        Ok((verdict, json)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
            match verdict {
                client::Verdict::Allowed => ExitCode::SUCCESS,
                client::Verdict::Denied => ExitCode::from(EXIT_DENIED),
                client::Verdict::Undecided => ExitCode::from(EXIT_UNDECIDED),
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn ask_admin(args: RevokeArgs) -> anyhow::Result<()> {
    let (kind, value) = [
        ("sub", &args.sub),
        ("jti", &args.jti),
        ("sid", &args.sid),
        ("client_id", &args.client_id),
    ]
    .into_iter()
    .find_map(|(kind, value)| Some((kind, value.clone()?)))
    .context("name what to revoke: --sub, --jti, --sid or --client-id")?;
    anyhow::ensure!(
        args.secret.is_none(),
        "--secret is not accepted (a secret on the command line shows in `ps` and in shell history): \
         set {ADMIN_SECRET_ENV} to the server's `revocation.admin_secret` instead"
    );
    let secret = std::env::var(ADMIN_SECRET_ENV)
        .ok()
        .filter(|secret| !secret.is_empty())
        .with_context(|| {
            format!("set {ADMIN_SECRET_ENV} to the server's `revocation.admin_secret`")
        })?;
    let base = args.admin.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = if args.undo {
        let mut url = url::Url::parse(&format!("{base}/admin/revocations"))
            .with_context(|| format!("--admin `{}` is not a URL", args.admin))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--admin `{}` cannot take a path", args.admin))?
            .push(kind)
            .push(&value);
        client.delete(url)
    } else {
        let mut body = serde_json::json!({ "kind": kind, "value": value });
        if let Some(issuer) = &args.issuer {
            body["issuer"] = Value::from(issuer.as_str());
        }
        if let Some(ttl) = args.ttl {
            body["ttl_seconds"] = Value::from(ttl);
        }
        client.post(format!("{base}/admin/revocations")).json(&body)
    };
    let response = request
        .bearer_auth(&secret)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API at {base}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !text.is_empty() {
        println!("{text}");
    }
    if status.is_success() {
        return Ok(());
    }
    // The API answers its own refusals with a JSON `error`; a bare 404 is a route that is not there.
    let answered = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| body.get("error").cloned())
        .is_some();
    match status {
        reqwest::StatusCode::NOT_FOUND if !answered => anyhow::bail!(
            "{base} has no revocation API (404): the server's admin API is off unless its configuration sets \
             `revocation.admin_secret`, or {base} is not a portcullis admin port (`server.admin_listen`, \
             default port 9002; not the gRPC port)"
        ),
        reqwest::StatusCode::UNAUTHORIZED => anyhow::bail!(
            "the admin API at {base} refused the secret (401): {ADMIN_SECRET_ENV} is not the server's \
             `revocation.admin_secret`"
        ),
        _ => anyhow::bail!("the admin API answered {status}"),
    }
}

/// Where `revoke` reads the admin API secret from (never the command line).
const ADMIN_SECRET_ENV: &str = "PORTCULLIS_ADMIN_SECRET";

/// `explain`: the server's own Check service, in process, with the explanation switched on.
async fn explain_offline(args: ExplainArgs) -> ExitCode {
    match explain_answer(&args).await {
        Ok(answer) => print_answer(Ok(answer)),
        Err(err) => report(Err(err)),
    }
}

async fn explain_answer(
    args: &ExplainArgs,
) -> anyhow::Result<(client::Verdict, serde_json::Value)> {
    use prost::Message as _;
    let mut config = load_config(&args.config)?;
    // A request that cannot be built is refused before any key set is fetched.
    let mut headers = Vec::new();
    let ask = args.request.ask("", &mut headers, true);
    let request = client::check_request(&ask)?;
    if let Some(jwks) = &args.jwks {
        use_local_jwks(&mut config, jwks);
    }
    config.server.allow_explain = true;
    let app = Arc::new(App::new(
        &config,
        None,
        crate::io::sources(),
        Clock::system(),
    )?);
    for warning in config.warnings() {
        tracing::warn!(config.field = %warning.path, "{}", warning.message);
    }
    let runtime = app.runtime();
    let cancel = tokio_util::sync::CancellationToken::new();
    crate::io::spawn_background(&runtime, &Clock::system(), &cancel);
    for _ in 0..100 {
        if runtime.ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !runtime.ready() {
        eprintln!("warning: some providers' keys could not be loaded within 10 s; their tokens cannot be decided");
    }
    let message = bytes::Bytes::from(request.encode_to_vec());
    let response = CheckService::new(app)
        .check(tonic::Request::new(message))
        .await
        .map_err(|status| anyhow::anyhow!("check failed: {status}"))?
        .into_inner();
    cancel.cancel();
    Ok(client::describe(&response))
}

/// `explain --jwks FILE`: every `jwt` provider with a key set (not a shared secret) reads this file
/// instead of fetching.
fn use_local_jwks(config: &mut Config, jwks: &Path) {
    for provider in &mut config.providers {
        if let ProviderKind::Jwt(jwt) = &mut provider.kind {
            if jwt.shared_secret.is_none() {
                jwt.jwks_uri = None;
                jwt.jwks_file = Some(jwks.to_owned());
            }
        }
    }
}
