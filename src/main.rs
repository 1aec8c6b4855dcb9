//! The `portcullis` binary: parse the command line, load and validate config, start logging, bind, and hand
//! over to the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use portcullis::authorizer::Authorizer;
use portcullis::clock::Clock;
use portcullis::config::{Config, ConfigErrors, SecretSource};
use portcullis::dev::{self, DevIssuer};
use portcullis::server::{self, App};
use portcullis::telemetry::{self, LogFormat};

/// Exit code for a configuration that cannot be used (EX_USAGE, as linkerd does).
const EXIT_CONFIG: u8 = 64;
/// Exit code of `check` when the request was denied.
const EXIT_DENIED: u8 = 3;
/// Exit code of `check` when the server answered that it could not decide.
const EXIT_UNDECIDED: u8 = 4;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Envoy external authorization (ext_authz v3) service"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PORTCULLIS_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Check (gRPC) and the admin endpoints (HTTP).
    Serve(ServeArgs),
    /// Print a token the `serve --dev` server accepts.
    Token(TokenArgs),
    /// Send one Check to a running server and print the decision as JSON.
    /// Exits 0 when allowed, 3 when denied, 4 when the server could not decide, 1 when it could not ask.
    Check(CheckArgs),
    /// Parse and validate a configuration file; print every problem with the path of its field.
    /// Exits 0 when valid, 64 when not.
    ValidateConfig(ValidateArgs),
    /// Evaluate a request offline, through the same code path as the server, and print the decision with
    /// its explanation (route, providers tried, requirements). Exits like `check`.
    Explain(ExplainArgs),
    /// Load-test an ext_authz server beside a no-op one; exits 2 when it saw errors or wrong decisions.
    Bench(portcullis::bench::BenchArgs),
    /// Print the SHA-256 digest of an API key for an `api_key` provider's `sha256`. Reads the key from
    /// standard input (one line) unless given, so it stays out of shell history.
    HashKey(HashKeyArgs),
}

#[derive(Args)]
struct HashKeyArgs {
    /// The key; omit it to read one line from standard input.
    key: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// The configuration file (YAML).
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
    /// Where `--dev` keeps its signing key.
    #[arg(long, default_value = ".portcullis-dev", env = "PORTCULLIS_DEV_STATE")]
    state_dir: PathBuf,
}

#[derive(Args)]
struct TokenArgs {
    /// The subject (`sub`).
    #[arg(long, default_value = "dev-user")]
    sub: String,
    /// Space-separated scopes (`scope`).
    #[arg(long, default_value = "")]
    scope: String,
    /// Space-separated Auth0-style RBAC permissions (`permissions` array).
    #[arg(long)]
    permissions: Option<String>,
    /// The audience (`aud`).
    #[arg(long, default_value = dev::DEV_AUDIENCE)]
    aud: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// An extra claim, `name=value`; the value is read as JSON when it parses, else as a string.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// The dev server's state directory.
    #[arg(long, default_value = ".portcullis-dev", env = "PORTCULLIS_DEV_STATE")]
    state_dir: PathBuf,
}

/// The request to decide, as Envoy would describe it.
#[derive(Args)]
struct RequestArgs {
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

impl RequestArgs {
    /// The request, asking for its explanation when `explain`.
    fn ask<'a>(
        &'a self,
        addr: &'a str,
        headers: &'a mut Vec<String>,
        explain: bool,
    ) -> portcullis::client::Ask<'a> {
        headers.extend(self.headers.iter().cloned());
        if explain {
            headers.push(format!(
                "{}: true",
                portcullis::server::check::EXPLAIN_HEADER
            ));
        }
        portcullis::client::Ask {
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
struct CheckArgs {
    /// The portcullis gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    addr: String,
    #[command(flatten)]
    request: RequestArgs,
    /// Ask the server for the decision's explanation (needs `server.allow_explain` on the server).
    #[arg(long)]
    explain: bool,
}

#[derive(Args)]
struct ExplainArgs {
    /// The configuration file (YAML).
    #[arg(long)]
    config: PathBuf,
    /// Use this JWKS file for every `jwt` provider instead of fetching keys.
    #[arg(long)]
    jwks: Option<PathBuf>,
    #[command(flatten)]
    request: RequestArgs,
}

#[derive(Args)]
struct ValidateArgs {
    /// The configuration file (YAML).
    file: PathBuf,
    /// Do not check that `{env:}`/`{file:}` secret references resolve on this machine.
    #[arg(long)]
    skip_secrets: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(cli.log_format);
    match cli.command {
        Command::ValidateConfig(args) => validate_config(&args),
        Command::Token(args) => report(token(&args)),
        Command::HashKey(args) => report(hash_key(args)),
        Command::Serve(args) => runtime().block_on(async { report(serve(args).await) }),
        Command::Check(args) => runtime().block_on(check(args)),
        Command::Explain(args) => runtime().block_on(explain(args)),
        Command::Bench(args) => portcullis::bench::main(args),
    }
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
            if let Some(errors) = err.downcast_ref::<ConfigErrors>() {
                eprintln!("error: {err}");
                for problem in &errors.0 {
                    eprintln!("  {problem}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration `{}`", path.display()))
        .map_err(|e| {
            anyhow::Error::new(ConfigErrors(vec![portcullis::config::Problem {
                path: ".".to_owned(),
                message: format!("{e:#}"),
            }]))
        })?;
    Ok(Config::from_yaml_str(&text)?)
}

fn validate_config(args: &ValidateArgs) -> ExitCode {
    let mut problems = match load_config(&args.file) {
        Ok(config) if args.skip_secrets => return valid(&args.file, &config),
        Ok(config) => match secret_problems(&config) {
            problems if problems.is_empty() => return valid(&args.file, &config),
            problems => problems,
        },
        Err(err) => match err.downcast::<ConfigErrors>() {
            Ok(errors) => errors.0.iter().map(ToString::to_string).collect(),
            Err(other) => vec![format!(". : {other:#}")],
        },
    };
    println!("{}: invalid configuration", args.file.display());
    problems.dedup();
    for problem in problems {
        println!("  {problem}");
    }
    ExitCode::from(EXIT_CONFIG)
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

fn secret_problems(config: &Config) -> Vec<String> {
    let source = SecretSource::Process;
    let mut problems = Vec::new();
    for (i, provider) in config.providers.iter().enumerate() {
        for (field, secret) in provider.kind.secrets() {
            if let Err(e) = secret.resolve(&source) {
                problems.push(format!("providers[{i}].{field}: {e}"));
            }
        }
    }
    problems
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, dev, grpc, admin) = if args.dev {
        let listen = args
            .listen
            .unwrap_or_else(|| dev::DEV_LISTEN.parse().expect("valid"));
        let admin_addr = args
            .admin_listen
            .unwrap_or_else(|| dev::DEV_ADMIN_LISTEN.parse().expect("valid"));
        let admin = bind(admin_addr, "admin").await?;
        let admin_addr = admin.local_addr()?;
        let grpc = bind(listen, "gRPC").await?;
        let mut issuer = DevIssuer::load_or_create(&args.state_dir, &dev::issuer_for(admin_addr))?;
        issuer.set_issuer(dev::issuer_for(admin_addr))?;
        let config = issuer.config(grpc.local_addr()?, admin_addr);
        print_dev_banner(&config, &issuer, &args.state_dir);
        (config, Some(Arc::new(issuer)), grpc, admin)
    } else {
        let path = args
            .config
            .as_deref()
            .expect("clap requires --config without --dev");
        let mut config = load_config(path)?;
        if let Some(listen) = args.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = args.admin_listen {
            config.server.admin_listen = admin;
        }
        let grpc = bind(config.server.listen, "gRPC").await?;
        let admin = bind(config.server.admin_listen, "admin").await?;
        (config, None, grpc, admin)
    };

    let authorizer = Authorizer::from_config(&config, &SecretSource::Process, Clock::system())
        .map_err(|e| {
            anyhow::Error::new(ConfigErrors(vec![portcullis::config::Problem {
                path: ".".to_owned(),
                message: e.to_string(),
            }]))
        })?;
    tracing::info!(
        grpc.listen = %grpc.local_addr()?,
        admin.listen = %admin.local_addr()?,
        providers = config.providers.len(),
        "portcullis serving"
    );
    let app = Arc::new(App::new(&config, authorizer, dev));
    server::run(app, grpc, admin, shutdown_signal()).await?;
    Ok(())
}

fn print_dev_banner(config: &Config, issuer: &DevIssuer, state_dir: &Path) {
    eprintln!(
        "portcullis dev server (development only)\n  \
         gRPC Check:  {grpc}\n  \
         admin:       http://{admin}  (/healthz /readyz /metrics)\n  \
         issuer:      {iss}  (keys in {state})\n  \
         audience:    {aud}\n\n  \
         mint a token:   portcullis token --sub alice --scope \"read:x write:x\"\n  \
         ask a check:    portcullis check --addr http://{grpc} --header \"authorization: Bearer $TOKEN\"\n",
        grpc = config.server.listen,
        admin = config.server.admin_listen,
        iss = issuer.issuer(),
        state = state_dir.display(),
        aud = dev::DEV_AUDIENCE,
    );
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

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let default_issuer = dev::issuer_for(dev::DEV_ADMIN_LISTEN.parse().expect("valid"));
    let issuer = DevIssuer::load_or_create(&args.state_dir, &default_issuer)?;
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
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        extra.insert(name.to_owned(), value);
    }
    anyhow::ensure!(args.ttl > 0, "--ttl must be positive");
    let token = issuer.mint(
        &args.sub,
        &args.scope,
        &args.aud,
        args.ttl,
        Clock::system().now(),
        extra,
    )?;
    println!("{token}");
    Ok(())
}

fn hash_key(args: HashKeyArgs) -> anyhow::Result<()> {
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
    println!("{}", portcullis::providers::api_key::hash_key(&key));
    Ok(())
}

async fn check(args: CheckArgs) -> ExitCode {
    let mut headers = Vec::new();
    let ask = args.request.ask(&args.addr, &mut headers, args.explain);
    print_answer(portcullis::client::ask(&ask).await)
}

fn print_answer(
    answer: Result<(portcullis::client::Verdict, serde_json::Value), portcullis::client::AskError>,
) -> ExitCode {
    match answer {
        Ok((verdict, json)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
            match verdict {
                portcullis::client::Verdict::Allowed => ExitCode::SUCCESS,
                portcullis::client::Verdict::Denied => ExitCode::from(EXIT_DENIED),
                portcullis::client::Verdict::Undecided => ExitCode::from(EXIT_UNDECIDED),
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `explain`: the server's own Check service, in process, with the explanation switched on.
async fn explain(args: ExplainArgs) -> ExitCode {
    match explain_answer(&args).await {
        Ok(answer) => print_answer(Ok(answer)),
        Err(err) => report(Err(err)),
    }
}

async fn explain_answer(
    args: &ExplainArgs,
) -> anyhow::Result<(portcullis::client::Verdict, serde_json::Value)> {
    use portcullis::pb::auth::authorization_server::Authorization as _;
    let mut config = load_config(&args.config)?;
    if let Some(jwks) = &args.jwks {
        for provider in &mut config.providers {
            if let portcullis::config::ProviderKind::Jwt(jwt) = &mut provider.kind {
                if jwt.shared_secret.is_none() {
                    jwt.jwks_uri = None;
                    jwt.jwks_file = Some(jwks.clone());
                }
            }
        }
    }
    config.server.allow_explain = true;
    let authorizer = Authorizer::from_config(&config, &SecretSource::Process, Clock::system())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cancel = tokio_util::sync::CancellationToken::new();
    authorizer.spawn_background(&cancel);
    for _ in 0..100 {
        if authorizer.ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !authorizer.ready() {
        eprintln!("warning: some providers' keys could not be loaded within 10 s; their tokens cannot be decided");
    }
    let app = Arc::new(App::new(&config, authorizer, None));
    let mut headers = Vec::new();
    let ask = args.request.ask("", &mut headers, true);
    let request = portcullis::client::check_request(&ask)?;
    let response = portcullis::server::check::CheckService::new(app)
        .check(tonic::Request::new(request))
        .await
        .map_err(|status| anyhow::anyhow!("check failed: {status}"))?
        .into_inner();
    cancel.cancel();
    Ok(portcullis::client::describe(&response))
}
