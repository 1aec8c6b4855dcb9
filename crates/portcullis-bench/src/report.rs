//! Each phase's figures, their medians over the rounds, the ratio to the no-op server, as a table or JSON.

use serde_json::{json, Map, Value};

use super::load::{Class, Plan, Stats};

/// What one phase against one server measured.
pub struct Phase {
    pub server: String,
    pub round: usize,
    pub stats: Stats,
    pub seconds: f64,
    /// CPU seconds the server used during the measured window, when the bench knows its process.
    pub server_cpu: Option<f64>,
    pub client_cpu: Option<f64>,
    pub server_rss: Option<u64>,
}

/// One figure: its key in the JSON and its label in the table.
struct Figure {
    key: String,
    label: String,
}

fn figures(plan: &Plan) -> Vec<Figure> {
    let f = |key: &str, label: &str| Figure {
        key: key.to_owned(),
        label: label.to_owned(),
    };
    let mut list = vec![
        f("requests_per_s", "requests/s"),
        f("p50_us", "p50 (µs)"),
        f("p90_us", "p90 (µs)"),
        f("p99_us", "p99 (µs)"),
        f("p99_9_us", "p99.9 (µs)"),
        f("max_us", "max (µs)"),
    ];
    let classes: Vec<Class> = [Class::Hot, Class::Distinct, Class::Bad, Class::None]
        .into_iter()
        .filter(|&c| plan.mix.uses(c))
        .collect();
    if classes.len() > 1 || plan.flood_connections > 0 {
        for class in classes {
            list.push(f(
                &format!("{}_p99_us", class.name()),
                &format!("{} p99 (µs)", class.name()),
            ));
        }
    }
    if plan.flood_connections > 0 {
        list.push(f("flood_requests_per_s", "flood requests/s"));
        list.push(f("flood_p99_us", "flood p99 (µs)"));
    }
    if plan.rate.is_some() {
        list.push(f("send_lag_p99_us", "client send lag p99 (µs)"));
    }
    list.push(f("server_cpu_s_per_1000", "server CPU s / 1000 checks"));
    list.push(f("client_cpu_s_per_1000", "client CPU s / 1000 checks"));
    list.push(f("server_rss_mib", "server RSS (MiB)"));
    list
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Phase {
    pub(crate) fn values(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let main = self.stats.main_load();
        let answered = main.len();
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.insert(k.to_owned(), json!(v));
            }
        };
        put("requests", Some(answered as f64));
        put("requests_per_s", Some(answered as f64 / self.seconds));
        if answered > 0 {
            put("p50_us", Some(us(main.value_at_quantile(0.50))));
            put("p90_us", Some(us(main.value_at_quantile(0.90))));
            put("p99_us", Some(us(main.value_at_quantile(0.99))));
            put("p99_9_us", Some(us(main.value_at_quantile(0.999))));
            put("max_us", Some(us(main.max())));
        }
        for class in Class::ALL {
            let h = self.stats.class(class);
            if !h.is_empty() {
                put(&format!("{}_requests", class.name()), Some(h.len() as f64));
                put(
                    &format!("{}_p99_us", class.name()),
                    Some(us(h.value_at_quantile(0.99))),
                );
            }
        }
        let flood = self.stats.answered(Class::Flood);
        if flood > 0 {
            put("flood_requests_per_s", Some(flood as f64 / self.seconds));
        }
        let lag = &self.stats.send_lag;
        if !lag.is_empty() {
            put("send_lag_p99_us", Some(us(lag.value_at_quantile(0.99))));
        }
        let checks = (answered + flood) as f64;
        if checks > 0.0 {
            put(
                "server_cpu_s_per_1000",
                self.server_cpu.map(|c| c / checks * 1000.0),
            );
            put(
                "client_cpu_s_per_1000",
                self.client_cpu.map(|c| c / checks * 1000.0),
            );
        }
        put(
            "server_rss_mib",
            self.server_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        );
        m
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The medians, errors and mismatches of one server over its rounds.
struct Summary {
    server: String,
    medians: Map<String, Value>,
    rounds: Vec<Map<String, Value>>,
    errors: u64,
    mismatches: u64,
    samples: Vec<String>,
}

fn summaries(phases: &[Phase], servers: &[String]) -> Vec<Summary> {
    servers
        .iter()
        .map(|server| {
            let mine: Vec<&Phase> = phases.iter().filter(|p| &p.server == server).collect();
            let rounds: Vec<Map<String, Value>> = mine.iter().map(|p| p.values()).collect();
            let mut keys: Vec<&String> = rounds.iter().flat_map(|r| r.keys()).collect();
            keys.sort();
            keys.dedup();
            let medians = keys
                .into_iter()
                .filter_map(|k| {
                    let values = rounds.iter().filter_map(|r| r.get(k)?.as_f64()).collect();
                    Some((k.clone(), json!(median(values)?)))
                })
                .collect();
            let mut samples: Vec<String> =
                mine.iter().flat_map(|p| p.stats.samples.clone()).collect();
            samples.truncate(5);
            Summary {
                server: server.clone(),
                medians,
                errors: mine.iter().map(|p| p.stats.errors).sum(),
                mismatches: mine.iter().map(|p| p.stats.mismatches).sum(),
                samples,
                rounds,
            }
        })
        .collect()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The whole run as JSON: settings, per server its medians, every round, errors and mismatches, and the
/// ratios of each measured server's medians to the no-op server's.
pub fn json(settings: Value, plan: &Plan, phases: &[Phase], servers: &[String]) -> Value {
    let summaries = summaries(phases, servers);
    let noop = summaries.iter().find(|s| s.server == "noop");
    let mut out = Map::new();
    out.insert("settings".into(), settings);
    let mut by_server = Map::new();
    for s in &summaries {
        by_server.insert(
            s.server.clone(),
            json!({
                "median": s.medians,
                "rounds": s.rounds,
                "errors": s.errors,
                // The no-op server allows everything: its decisions are not checked.
                "mismatches": if s.server == "noop" { Value::Null } else { json!(s.mismatches) },
                "error_samples": s.samples,
            }),
        );
    }
    out.insert("servers".into(), Value::Object(by_server));
    // Every measured server's medians over the no-op server's (one per transport with --transport).
    if let Some(noop) = noop {
        for measured in summaries.iter().filter(|s| s.server != "noop") {
            let ratios: Map<String, Value> = figures(plan)
                .iter()
                .filter_map(|f| {
                    let get = |s: &Summary| s.medians.get(&f.key).and_then(Value::as_f64);
                    Some((f.key.clone(), json!(ratio(get(measured), get(noop))?)))
                })
                .collect();
            out.insert(
                format!("ratio_{}_to_noop", measured.server),
                Value::Object(ratios),
            );
        }
    }
    Value::Object(out)
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// The table: one column per server (medians over the rounds), then the ratio to the no-op server.
pub fn table(title: &str, plan: &Plan, phases: &[Phase], servers: &[String]) -> String {
    let summaries = summaries(phases, servers);
    let has_ratio = summaries.len() > 1 && summaries.iter().any(|s| s.server == "noop");
    let noop = summaries.iter().find(|s| s.server == "noop");
    let first = summaries.first();
    let mut out = format!("{title}\n");
    let mut header = format!("{:<28}", "median of rounds");
    for s in &summaries {
        header.push_str(&format!("{:>14}", s.server));
    }
    if has_ratio {
        header.push_str(&format!("{:>10}", "ratio"));
    }
    out.push_str(header.trim_end());
    out.push('\n');
    for f in figures(plan) {
        let get = |s: &Summary| s.medians.get(&f.key).and_then(Value::as_f64);
        let mut line = format!("{:<28}", f.label);
        for s in &summaries {
            line.push_str(&format!("{:>14}", cell(get(s))));
        }
        if has_ratio {
            let r = ratio(first.and_then(get), noop.and_then(get));
            line.push_str(&format!(
                "{:>10}",
                r.map_or("-".into(), |r| format!("{r:.2}"))
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (label, pick) in [("errors", 0), ("mismatches", 1)] {
        let mut line = format!("{label:<28}");
        for s in &summaries {
            let v = match pick {
                0 => s.errors.to_string(),
                _ if s.server == "noop" => "unchecked".into(),
                _ => s.mismatches.to_string(),
            };
            line.push_str(&format!("{v:>14}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for s in &summaries {
        for sample in &s.samples {
            out.push_str(&format!("  {}: {sample}\n", s.server));
        }
    }
    out
}

/// Errors and mismatches over every server.
pub fn failures(phases: &[Phase]) -> u64 {
    phases
        .iter()
        .map(|p| p.stats.errors + p.stats.mismatches)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }
}
