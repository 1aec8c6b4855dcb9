//! `portcullis bench`: a load generator for ext_authz servers, measuring portcullis side by side with a
//! no-op server.
//!
//! It mints its own RS256 key and tokens, writes a JWKS and a configuration trusting them, starts
//! `portcullis serve` and a no-op ext_authz server (`portcullis bench --serve-noop ADDR`) as child
//! processes on free loopback ports, and drives both with the same client settings in alternating rounds
//! (with `--transport grpc,http,h2c`, portcullis' HTTP forward-auth listener too, each a server of its own):
//! C HTTP/2 connections × S streams, closed loop for T seconds or open loop at a fixed rate (latency timed
//! from each request's intended send time). Every answer is checked against the decision its token calls
//! for. It reports requests/s, latency percentiles, errors, mismatches and server CPU seconds per 1000
//! checks, each with its ratio to the no-op server, as a table or `--json`.
//!
//! # Layout
//! Its own package because it talks to portcullis as a separate process, over protobuf only
//! (`portcullis-proto`): it does not link the engine or the server.
//!
//! - [`tokens`]: the key, its JWKS, the server's configuration, the tokens.
//! - [`load`]: the transport, the traffic mix, the closed and open loops, the statistics.
//! - [`noop`]: the no-op server.
//! - [`process`]: the child servers, free ports, readiness, `/proc` readings.
//! - [`report`]: medians, ratios, the table and the JSON.
//! - [`scale`]: `--scale`, the same Check with many routes and many issuers, one server per case.

pub mod load;
pub mod noop;
pub mod process;
pub mod report;
pub mod scale;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use load::{Class, Mix, Plan, Requests, Target};
use process::Server;
use report::Phase;

/// Exit code when a run saw errors or mismatched decisions.
const EXIT_FAILURES: u8 = 2;

/// `portcullis bench`: drive ext_authz servers with checks and measure them.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// HTTP/2 connections (one gRPC channel each).
    #[arg(long, short = 'c', default_value_t = 2)]
    pub connections: usize,
    /// Concurrent streams per connection (closed loop: callers; open loop: the most in flight).
    #[arg(long, short = 's', default_value_t = 32)]
    pub streams: usize,
    /// Measured seconds per round and server. Defaults to 5 (2 with --scale).
    #[arg(long, short = 'd')]
    pub duration: Option<f64>,
    /// Unmeasured seconds before each measurement (connections warm, caches filled).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Rounds; the servers alternate within each round (A B, then B A, …) and medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Open loop: send this many checks per second in total, whatever the answers do; closed loop
    /// (each stream sends its next check when the last is answered) without it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The traffic mix, `CLASS=WEIGHT,…` over hot (one valid token), distinct (valid tokens from a set of
    /// --distinct-tokens), bad (distinct bad-signature tokens) and none (no token).
    #[arg(long, default_value = "hot=100")]
    pub mix: Mix,
    /// How many distinct valid tokens the `distinct` class cycles through (each RS256-signed at start).
    #[arg(long, default_value_t = 1000)]
    pub distinct_tokens: usize,
    /// How many distinct bad-signature tokens the `bad` class and the flood cycle through.
    #[arg(long, default_value_t = 100_000)]
    pub bad_tokens: usize,
    /// Extra connections (× --streams) sending distinct bad-signature tokens as fast as they are answered,
    /// beside the main load: a flood, whose effect on the main load's latency is reported.
    #[arg(long, default_value_t = 0)]
    pub flood_connections: usize,
    /// The token cache size of the portcullis the bench starts (`cache.max_entries`; 0 turns it off, so
    /// every valid token is verified). The configuration's default when not given.
    #[arg(long)]
    pub cache_entries: Option<u64>,
    /// Drive this already-running ext_authz server (e.g. http://127.0.0.1:9001) instead of starting
    /// portcullis. It must trust the bench's key: start it with `--keys-dir DIR`'s portcullis.yaml.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// With --target: the server's process id, to report its CPU time and memory.
    #[arg(long, requires = "target")]
    pub target_pid: Option<u32>,
    /// Do not measure the no-op server (no ratios).
    #[arg(long)]
    pub no_noop: bool,
    /// Keep the signing key, jwks.json and portcullis.yaml here (made on first use, then reused);
    /// a temporary directory, removed afterwards, when not given.
    #[arg(long, value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Write the key, jwks.json, portcullis.yaml and the tokens (hot.token, distinct.tokens, bad.tokens)
    /// into --keys-dir and exit, for other load clients (scripts/bench-envoy).
    #[arg(long, requires = "keys_dir")]
    pub setup_only: bool,
    /// Client runtime threads (default: one per core).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// How to send checks to the portcullis the bench starts, comma-separated for several in one run:
    /// `grpc` (ext_authz Check), `http` (the HTTP forward-auth listener in `http_mode: envoy`, as Envoy's
    /// `http_service` asks: HTTP/1.1, so --connections × --streams connections) and `h2c` (the same
    /// listener over HTTP/2 with prior knowledge, --connections connections). The no-op server speaks
    /// gRPC only. With --target: the transport of that server (one).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "grpc")]
    pub transport: Vec<TransportArg>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Scale mode: start one portcullis per case, each with a generated configuration of
    /// --scale-routes routes (the request takes the last one) or --scale-issuers `jwt` providers (one
    /// issuer each, the token from the last one), drive each with the cached token in alternating rounds
    /// (gRPC, no no-op server), and report per case checks/s, the ratio to the first case, server RSS
    /// (VmRSS, VmHWM), RSS per added route or issuer, and the time from start to ready.
    #[arg(long, conflicts_with_all = ["target", "setup_only", "flood_connections", "no_noop"])]
    pub scale: bool,
    /// With --scale: the route counts, comma-separated; the first is the baseline's.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10000,100000",
        requires = "scale"
    )]
    pub scale_routes: Vec<usize>,
    /// With --scale: the issuer (`jwt` provider) counts, comma-separated; the first is the baseline's.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2000",
        requires = "scale"
    )]
    pub scale_issuers: Vec<usize>,
    /// Internal: serve the no-op ext_authz server on ADDR instead of running a bench.
    #[arg(long, value_name = "ADDR", hide = true)]
    pub serve_noop: Option<SocketAddr>,
}

/// A transport of `--transport`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportArg {
    Grpc,
    Http,
    H2c,
}

// === impl TransportArg ===

impl TransportArg {
    fn name(self) -> &'static str {
        match self {
            TransportArg::Grpc => "grpc",
            TransportArg::Http => "http",
            TransportArg::H2c => "h2c",
        }
    }

    fn target(self, url: String) -> Target {
        match self {
            TransportArg::Grpc => Target::Grpc(url),
            TransportArg::Http => Target::Http(url),
            TransportArg::H2c => Target::H2c(url),
        }
    }
}

/// Validates a portcullis configuration (YAML text) the way `portcullis serve` would, with every
/// problem in the error. The binary passes portcullis' own; this package does not link the engine.
pub type ValidateConfig = fn(&str) -> Result<(), String>;

/// Runs `portcullis bench`: exit 0, 1 when it could not run, 2 when it saw errors or mismatches.
/// `validate` checks the configuration the bench writes before it starts a server with it.
pub fn main(args: BenchArgs, validate: ValidateConfig) -> ExitCode {
    if let Some(addr) = args.serve_noop {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime starts");
        return match runtime.block_on(noop::serve(addr)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.client_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(run(&args, validate)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_FAILURES),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// === impl BenchArgs ===

impl BenchArgs {
    /// `--duration`, or its default: 5 s, 2 s per case with `--scale`.
    pub fn duration(&self) -> f64 {
        self.duration.unwrap_or(if self.scale { 2.0 } else { 5.0 })
    }
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.streams > 0,
        "--connections and --streams must be at least 1"
    );
    anyhow::ensure!(
        args.duration() > 0.0 && args.duration().is_finite(),
        "--duration must be positive"
    );
    anyhow::ensure!(
        args.warmup >= 0.0 && args.warmup.is_finite(),
        "--warmup must not be negative"
    );
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    }
    anyhow::ensure!(
        args.distinct_tokens > 0 && args.bad_tokens > 0,
        "--distinct-tokens and --bad-tokens must be at least 1"
    );
    anyhow::ensure!(!args.transport.is_empty(), "--transport needs a value");
    anyhow::ensure!(
        args.target.is_none() || args.transport.len() == 1,
        "--target takes one --transport"
    );
    anyhow::ensure!(
        !args.scale || args.transport == [TransportArg::Grpc],
        "--scale drives gRPC only"
    );
    Ok(())
}

/// Returns the number of errors and mismatches seen.
async fn run(args: &BenchArgs, validate: ValidateConfig) -> anyhow::Result<u64> {
    check_args(args)?;
    if args.scale {
        return scale::run(args, validate).await;
    }
    let dir = tokens::WorkDir::new(args.keys_dir.as_deref())?;
    let keys = tokens::Keys::load_or_create(&dir.path)?;
    let wants_http = args.transport.iter().any(|t| *t != TransportArg::Grpc);
    let config =
        tokens::write_server_files(&dir.path, &keys, args.cache_entries, wants_http, validate)?;
    let needs_distinct = args.setup_only || args.mix.uses(Class::Distinct);
    let tokens = keys.tokens(
        if needs_distinct {
            args.distinct_tokens
        } else {
            1
        },
        args.bad_tokens,
    );
    if args.setup_only {
        tokens.write(&dir.path)?;
        println!("{}", dir.path.display());
        return Ok(0);
    }

    let plan = Plan {
        connections: args.connections,
        streams: args.streams,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration()),
        mix: args.mix,
        rate: args.rate,
        flood_connections: args.flood_connections,
        verify: true,
    };

    // The servers: (name, where and how, process when the bench knows it). One portcullis serves every
    // transport asked for; each is measured as a server of its own (`portcullis-http`, …).
    let mut children: Vec<Server> = Vec::new();
    let mut servers: Vec<(String, Target, Option<u32>)> = Vec::new();
    match &args.target {
        Some(url) => servers.push((
            "target".into(),
            args.transport[0].target(url.clone()),
            args.target_pid,
        )),
        None => {
            let server =
                Server::portcullis(&config, &dir.path, "portcullis.log", wants_http).await?;
            let mut transports = args.transport.clone();
            transports.dedup();
            for transport in transports {
                let addr = match transport {
                    TransportArg::Grpc => server.grpc,
                    _ => server.http.expect("started with the HTTP listener"),
                };
                let name = if args.transport.len() == 1 && transport == TransportArg::Grpc {
                    "portcullis".to_owned()
                } else {
                    format!("portcullis-{}", transport.name())
                };
                servers.push((
                    name,
                    transport.target(format!("http://{addr}")),
                    Some(server.pid()),
                ));
            }
            children.push(server);
        }
    }
    if !args.no_noop {
        let server = Server::noop(&dir.path).await?;
        servers.push((
            "noop".into(),
            Target::Grpc(format!("http://{}", server.grpc)),
            Some(server.pid()),
        ));
        children.push(server);
    }

    let prepared: Vec<Arc<Requests>> = servers
        .iter()
        .map(|(_, target, _)| Arc::new(Requests::new(target, &tokens)))
        .collect();
    drop(tokens);

    let mut phases = Vec::new();
    for round in 0..args.rounds {
        for i in round_order(servers.len(), round) {
            let (name, target, pid) = &servers[i];
            let mut plan = plan.clone();
            plan.verify = name != "noop";
            let phase = measure(name, round, target, &prepared[i], &plan, *pid).await?;
            if !args.json {
                eprintln!("{}", progress(&phase, args.rounds));
            }
            phases.push(phase);
            for child in &mut children {
                if child.exited() {
                    anyhow::bail!(
                        "the {} server exited during the run; its log:\n{}",
                        child.name,
                        child.log_tail()
                    );
                }
            }
        }
    }

    let names: Vec<String> = servers.iter().map(|(n, _, _)| n.clone()).collect();
    let settings = json!({
        "connections": args.connections,
        "streams": args.streams,
        "duration_s": args.duration(),
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "rate": args.rate,
        "mix": mix_text(&args.mix),
        "distinct_tokens": args.distinct_tokens,
        "bad_tokens": args.bad_tokens,
        "flood_connections": args.flood_connections,
        "cache_entries": args.cache_entries,
        "target": args.target,
        "transports": args.transport.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    if args.json {
        let out = report::json(settings, &plan, &phases, &names);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let title = format!(
            "portcullis bench: {} connection(s) × {} streams, {}, mix {}{}{}, {} round(s) of {} s (+{} s warm-up)",
            args.connections,
            args.streams,
            match args.rate {
                Some(rate) => format!("open loop at {rate} checks/s"),
                None => "closed loop".into(),
            },
            mix_text(&args.mix),
            args.cache_entries
                .map_or(String::new(), |n| format!(", server cache {n} entries")),
            if args.flood_connections > 0 {
                format!(", flood on {} more connection(s)", args.flood_connections)
            } else {
                String::new()
            },
            args.rounds,
            args.duration(),
            args.warmup,
        );
        print!("{}", report::table(&title, &plan, &phases, &names));
    }
    Ok(report::failures(&phases))
}

fn mix_text(mix: &Mix) -> String {
    [Class::Hot, Class::Distinct, Class::Bad, Class::None]
        .into_iter()
        .filter(|&c| mix.uses(c))
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join("+")
        + &format!(" ({mix})")
}

/// The order the servers of one round are measured in: as listed, then reversed every other round, so
/// that none is always measured first (A B, then B A, …).
pub(crate) fn round_order(servers: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..servers).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// The progress line printed after each measured phase (unless `--json`).
pub(crate) fn progress(phase: &report::Phase, rounds: usize) -> String {
    format!(
        "round {}/{} {}: {:.0} checks/s, {} errors, {} mismatches",
        phase.round + 1,
        rounds,
        phase.server,
        phase.stats.main_load().len() as f64 / phase.seconds,
        phase.stats.errors,
        phase.stats.mismatches,
    )
}

pub(crate) async fn measure(
    name: &str,
    round: usize,
    target: &Target,
    requests: &Arc<Requests>,
    plan: &Plan,
    pid: Option<u32>,
) -> anyhow::Result<Phase> {
    let own = std::process::id();
    // CPU seconds (server, this client) at the measured window's start and end.
    let mut server: Vec<Option<f64>> = Vec::new();
    let mut client: Vec<Option<f64>> = Vec::new();
    let (stats, duration) = load::run(target, Arc::clone(requests), plan, |_| {
        server.push(pid.and_then(process::cpu_seconds));
        client.push(process::cpu_seconds(own));
    })
    .await?;
    let delta = |readings: &[Option<f64>]| match readings {
        [Some(a), Some(b)] => Some(b - a),
        _ => None,
    };
    Ok(Phase {
        server: name.to_owned(),
        round,
        stats,
        seconds: duration.as_secs_f64(),
        server_cpu: delta(&server),
        client_cpu: delta(&client),
        server_rss: pid.and_then(process::rss_bytes),
    })
}

#[cfg(test)]
mod round_tests {
    #[test]
    fn rounds_alternate_the_order_of_the_servers() {
        assert_eq!(super::round_order(3, 0), [0, 1, 2]);
        assert_eq!(super::round_order(3, 1), [2, 1, 0]);
        assert_eq!(super::round_order(3, 2), [0, 1, 2]);
        assert!(super::round_order(0, 1).is_empty());
    }
}
