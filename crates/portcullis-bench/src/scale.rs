//! `portcullis bench --scale`: the cost of a Check as the configuration grows, in one run.
//!
//! It starts one portcullis per case, each with a generated configuration: N routes (one host or one
//! path prefix per tenant, the bench's request taking the last route) with the bench's one issuer, and
//! K `jwt` providers (one issuer per tenant, every provider trusting the bench's key through one shared
//! `jwks_file`, the token from the last issuer) on one route. Every case is driven with the same cached
//! token, in alternating rounds, and reported with its checks/s, its ratio to the first case (the
//! baseline: the fewest routes and issuers), the server's memory (VmRSS and VmHWM from `/proc`), the
//! memory each added route or issuer costs, and the time from start to ready.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::load::{Class, Plan, Requests, Target};
use super::process::{self, Server};
use super::report::{median, Phase};
use super::tokens::{self, AUDIENCE, ISSUER};
use super::{BenchArgs, ValidateConfig};

/// The host and path prefix of the route the bench's requests take (the request is `GET
/// api.bench.invalid/api/items?page=2`).
const HOST: &str = "api.bench.invalid";
const PATH_PREFIX: &str = "/api/";

/// One configuration measured: how many routes and how many `jwt` providers (issuers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub routes: usize,
    pub issuers: usize,
}

// === impl Case ===

impl Case {
    pub fn name(self) -> String {
        format!("{}r-{}i", self.routes, self.issuers)
    }

    /// The cases of `--scale-routes` and `--scale-issuers`: the baseline (the first of each), every
    /// other route count with the first issuer count, every other issuer count with the first route
    /// count. Both lists must be non-empty and their values at least 1.
    pub fn all(routes: &[usize], issuers: &[usize]) -> Vec<Case> {
        let (Some(&r0), Some(&i0)) = (routes.first(), issuers.first()) else {
            return Vec::new();
        };
        let mut cases = vec![Case {
            routes: r0,
            issuers: i0,
        }];
        let more_routes = routes[1..].iter().map(|&routes| Case {
            routes,
            issuers: i0,
        });
        let more_issuers = issuers[1..].iter().map(|&issuers| Case {
            routes: r0,
            issuers,
        });
        for case in more_routes.chain(more_issuers) {
            if !cases.contains(&case) {
                cases.push(case);
            }
        }
        cases
    }

    /// The server configuration: `issuers` `jwt` providers, the bench's own issuer last (every one reads
    /// the key from `jwks`), and `routes` routes, the one the bench's requests take last. The other
    /// routes alternate between a tenant host (`t7.bench.invalid`) and a host-less tenant path prefix
    /// (`/t8/`), so both the host map and the path trie of the route index hold many routes.
    pub fn config(self, jwks: &Path, cache_entries: Option<u64>) -> String {
        let mut yaml = String::with_capacity(64 * (self.routes + self.issuers) + 512);
        let jwks = jwks.display();
        let cache = cache_entries
            .map(|n| format!("\n    cache: {{max_entries: {n}}}"))
            .unwrap_or_default();
        yaml.push_str(
            "# Written by `portcullis bench --scale`: trusts the bench's own signing key.\n\
             server: {drain_seconds: 0}\nproviders:\n",
        );
        let provider = |yaml: &mut String, name: &str, issuer: &str| {
            let _ = write!(
                yaml,
                "  - name: {name}\n    type: jwt\n    issuer: '{issuer}'\n    audiences: ['{AUDIENCE}']\n    \
                 algorithms: [RS256]\n    jwks_file: '{jwks}'{cache}\n"
            );
        };
        for i in 1..self.issuers {
            provider(&mut yaml, &format!("tenant-{i}"), &tenant_issuer(i));
        }
        provider(&mut yaml, "bench", ISSUER);
        yaml.push_str("routes:\n");
        for i in 1..self.routes {
            let _ = if i % 2 == 1 {
                writeln!(
                    yaml,
                    "  - {{name: tenant-{i}, match: {{host: t{i}.bench.invalid}}}}"
                )
            } else {
                writeln!(
                    yaml,
                    "  - {{name: tenant-{i}, match: {{path_prefix: /t{i}/}}}}"
                )
            };
        }
        let _ = writeln!(
            yaml,
            "  - {{name: bench, match: {{host: {HOST}, path_prefix: {PATH_PREFIX}}}}}"
        );
        yaml
    }
}

fn tenant_issuer(i: usize) -> String {
    format!("https://t{i}.bench.invalid/")
}

/// What one case's server was, and measured.
struct Started {
    case: Case,
    server: Server,
    target: Target,
    requests: Arc<Requests>,
    config_bytes: usize,
}

/// Runs the scale mode; returns the number of errors and mismatches seen.
pub async fn run(args: &BenchArgs, validate: ValidateConfig) -> anyhow::Result<u64> {
    anyhow::ensure!(
        args.scale_routes
            .iter()
            .chain(&args.scale_issuers)
            .all(|&n| n >= 1),
        "--scale-routes and --scale-issuers take counts of at least 1"
    );
    let cases = Case::all(&args.scale_routes, &args.scale_issuers);
    anyhow::ensure!(
        !cases.is_empty(),
        "--scale-routes and --scale-issuers need a value each"
    );
    let dir = tokens::WorkDir::new(args.keys_dir.as_deref())?;
    let keys = tokens::Keys::load_or_create(&dir.path)?;
    let jwks = dir.path.join("jwks.json");
    std::fs::write(&jwks, keys.jwks().to_string())?;
    let tokens = keys.tokens(1, 1);

    let mut started = Vec::new();
    for case in &cases {
        let yaml = case.config(&jwks, args.cache_entries);
        validate(&yaml).map_err(|e| {
            anyhow::anyhow!(
                "the bench's own configuration for {} is invalid: {e}",
                case.name()
            )
        })?;
        let path: PathBuf = dir.path.join(format!("scale-{}.yaml", case.name()));
        std::fs::write(&path, &yaml)?;
        let config_bytes = yaml.len();
        drop(yaml);
        let log = format!("scale-{}.log", case.name());
        let server = Server::portcullis(&path, &dir.path, &log, false).await?;
        if !args.json {
            eprintln!(
                "{}: ready after {:.2} s, RSS {:.1} MiB",
                case.name(),
                server.ready_after.as_secs_f64(),
                process::rss_bytes(server.pid()).unwrap_or(0) as f64 / (1024.0 * 1024.0)
            );
        }
        let target = Target::Grpc(format!("http://{}", server.grpc));
        let requests = Arc::new(Requests::new(&target, &tokens));
        started.push(Started {
            case: *case,
            server,
            target,
            requests,
            config_bytes,
        });
    }

    let plan = Plan {
        connections: args.connections,
        streams: args.streams,
        warmup: std::time::Duration::from_secs_f64(args.warmup),
        duration: std::time::Duration::from_secs_f64(args.duration()),
        mix: "hot=1".parse().expect("a valid mix"),
        rate: args.rate,
        flood_connections: 0,
        verify: true,
    };
    let mut phases: Vec<Phase> = Vec::new();
    for round in 0..args.rounds {
        for i in super::round_order(started.len(), round) {
            let s = &mut started[i];
            let name = s.case.name();
            let pid = s.server.pid();
            let phase =
                super::measure(&name, round, &s.target, &s.requests, &plan, Some(pid)).await?;
            if !args.json {
                eprintln!("{}", super::progress(&phase, args.rounds));
            }
            phases.push(phase);
            if s.server.exited() {
                anyhow::bail!(
                    "the {name} server exited during the run; its log:\n{}",
                    s.server.log_tail()
                );
            }
        }
    }

    let results: Vec<Map<String, Value>> = started
        .iter()
        .map(|s| summary(s, &phases))
        .collect::<Vec<_>>();
    let results = with_relative_figures(results);
    let settings = json!({
        "connections": args.connections,
        "streams": args.streams,
        "duration_s": args.duration(),
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "rate": args.rate,
        "mix": "hot",
        "cache_entries": args.cache_entries,
        "scale_routes": args.scale_routes,
        "scale_issuers": args.scale_issuers,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    if args.json {
        let out = json!({"settings": settings, "cases": results});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let title = format!(
            "portcullis bench --scale: {} connection(s) × {} streams, {}, one cached token, {} round(s) of {} s (+{} s warm-up)",
            args.connections,
            args.streams,
            match args.rate {
                Some(rate) => format!("open loop at {rate} checks/s"),
                None => "closed loop".into(),
            },
            args.rounds,
            args.duration(),
            args.warmup,
        );
        print!("{}", table(&title, &results));
    }
    Ok(super::report::failures(&phases))
}

/// One case's figures: medians over its rounds, memory, readiness.
fn summary(s: &Started, phases: &[Phase]) -> Map<String, Value> {
    let name = s.case.name();
    let mine: Vec<&Phase> = phases.iter().filter(|p| p.server == name).collect();
    let rounds: Vec<Map<String, Value>> = mine.iter().map(|p| p.values()).collect();
    let med = |key: &str| median(rounds.iter().filter_map(|r| r.get(key)?.as_f64()).collect());
    let pid = s.server.pid();
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("routes".into(), json!(s.case.routes));
    m.insert("issuers".into(), json!(s.case.issuers));
    m.insert("config_bytes".into(), json!(s.config_bytes));
    m.insert("requests_per_s".into(), json!(med("requests_per_s")));
    m.insert(
        "server_cpu_us_per_check".into(),
        json!(med("server_cpu_s_per_1000").map(|v| v * 1000.0)),
    );
    m.insert("p99_us".into(), json!(med("p99_us")));
    m.insert("rss_bytes".into(), json!(process::rss_bytes(pid)));
    m.insert("peak_rss_bytes".into(), json!(process::peak_rss_bytes(pid)));
    m.insert("ready_s".into(), json!(s.server.ready_after.as_secs_f64()));
    m.insert(
        "errors".into(),
        json!(mine.iter().map(|p| p.stats.errors).sum::<u64>()),
    );
    m.insert(
        "mismatches".into(),
        json!(mine.iter().map(|p| p.stats.mismatches).sum::<u64>()),
    );
    m.insert(
        "hot_requests".into(),
        json!(mine
            .iter()
            .map(|p| p.stats.answered(Class::Hot))
            .sum::<u64>()),
    );
    m.insert("rounds".into(), json!(rounds));
    m
}

/// Adds each case's ratio of checks/s to the baseline (the first case), and the memory each route or
/// issuer beyond the baseline's costs (the difference in VmRSS over the difference in count).
fn with_relative_figures(mut results: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    let get = |m: &Map<String, Value>, key: &str| m.get(key).and_then(Value::as_f64);
    let Some(base) = results.first().cloned() else {
        return results;
    };
    for m in &mut results {
        let ratio = match (get(m, "requests_per_s"), get(&base, "requests_per_s")) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        m.insert("ratio_to_baseline".into(), json!(ratio));
        for (count, key) in [
            ("routes", "rss_per_route_bytes"),
            ("issuers", "rss_per_issuer_bytes"),
        ] {
            let added = get(m, count).unwrap_or(0.0) - get(&base, count).unwrap_or(0.0);
            let per = match (get(m, "rss_bytes"), get(&base, "rss_bytes")) {
                (Some(a), Some(b)) if added > 0.0 => Some((a - b) / added),
                _ => None,
            };
            m.insert(key.into(), json!(per));
        }
    }
    results
}

/// A column of the table: the JSON key, the label, how a value is shown.
type Column = (&'static str, &'static str, fn(f64) -> String);

fn table(title: &str, results: &[Map<String, Value>]) -> String {
    let mut out = format!("{title}\n");
    let columns: [Column; 11] = [
        ("routes", "routes", |v| format!("{v:.0}")),
        ("issuers", "issuers", |v| format!("{v:.0}")),
        ("requests_per_s", "checks/s", |v| format!("{v:.0}")),
        ("ratio_to_baseline", "ratio", |v| format!("{v:.2}")),
        ("server_cpu_us_per_check", "CPU µs/check", |v| {
            format!("{v:.1}")
        }),
        ("p99_us", "p99 µs", |v| format!("{v:.0}")),
        ("rss_bytes", "RSS MiB", mib),
        ("peak_rss_bytes", "peak MiB", mib),
        ("rss_per_route_bytes", "B/route", |v| format!("{v:.0}")),
        ("rss_per_issuer_bytes", "KiB/issuer", |v| {
            format!("{:.1}", v / 1024.0)
        }),
        ("ready_s", "ready s", |v| format!("{v:.2}")),
    ];
    let mut header = String::new();
    for (_, label, _) in &columns {
        let _ = write!(header, "{label:>13}");
    }
    let _ = writeln!(out, "{}{:>8}{:>11}", header, "errors", "mismatches");
    for m in results {
        let mut line = String::new();
        for (key, _, show) in &columns {
            let cell = m.get(*key).and_then(Value::as_f64).map_or("-".into(), show);
            let _ = write!(line, "{cell:>13}");
        }
        let count = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "{line}{:>8}{:>11}",
            count("errors"),
            count("mismatches")
        );
    }
    out
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_the_baseline_then_each_count_alone() {
        let cases = Case::all(&[1, 10_000, 100_000], &[1, 2_000]);
        let pairs: Vec<(usize, usize)> = cases.iter().map(|c| (c.routes, c.issuers)).collect();
        assert_eq!(pairs, [(1, 1), (10_000, 1), (100_000, 1), (1, 2_000)]);
        assert_eq!(Case::all(&[5, 5], &[1]).len(), 1);
        assert!(Case::all(&[], &[1]).is_empty());
    }

    #[test]
    fn the_config_has_every_route_and_issuer_and_the_bench_ones_last() {
        let case = Case {
            routes: 5,
            issuers: 3,
        };
        let yaml = case.config(Path::new("/tmp/jwks.json"), Some(7));
        let routes: Vec<&str> = yaml.lines().filter(|l| l.contains("{name: ")).collect();
        assert_eq!(routes.len(), 5);
        assert!(routes[0].contains("host: t1.bench.invalid"));
        assert!(routes[1].contains("path_prefix: /t2/"));
        assert!(routes[4].contains("name: bench") && routes[4].contains(HOST));
        let issuers: Vec<&str> = yaml.lines().filter(|l| l.contains("issuer: ")).collect();
        assert_eq!(issuers.len(), 3);
        assert!(issuers[2].contains(ISSUER));
        assert_eq!(yaml.matches("max_entries: 7").count(), 3);
    }

    #[test]
    fn ratios_and_memory_per_route_are_relative_to_the_first_case() {
        let case = |routes: usize, issuers: usize, rate: f64, rss: f64| {
            let mut m = Map::new();
            m.insert("routes".into(), json!(routes));
            m.insert("issuers".into(), json!(issuers));
            m.insert("requests_per_s".into(), json!(rate));
            m.insert("rss_bytes".into(), json!(rss));
            m
        };
        let results = with_relative_figures(vec![
            case(1, 1, 1000.0, 10_000.0),
            case(101, 1, 900.0, 60_000.0),
            case(1, 11, 500.0, 30_000.0),
        ]);
        let get = |i: usize, k: &str| results[i].get(k).and_then(Value::as_f64);
        assert_eq!(get(0, "ratio_to_baseline"), Some(1.0));
        assert_eq!(get(1, "ratio_to_baseline"), Some(0.9));
        assert_eq!(get(1, "rss_per_route_bytes"), Some(500.0));
        assert_eq!(get(1, "rss_per_issuer_bytes"), None);
        assert_eq!(get(2, "rss_per_issuer_bytes"), Some(2000.0));
        assert_eq!(get(2, "ratio_to_baseline"), Some(0.5));
    }
}
