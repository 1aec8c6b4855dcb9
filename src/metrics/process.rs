//! The process's own resources for `/metrics`, under the names every Prometheus client library uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, …), read from
//! `/proc/self` at scrape time. Where `/proc` cannot be read (not Linux), the series are absent.

use std::path::Path;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says of this process.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub threads: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<i64>,
}

// === impl Process ===

impl Process {
    /// Reads `proc` (`/proc` in production; a directory laid out like it in tests).
    pub(super) fn read(proc: &Path) -> Process {
        let own = proc.join("self");
        let stat = std::fs::read_to_string(own.join("stat")).unwrap_or_default();
        // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // Field n of stat(5) is fields[n - 3] here.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let status = std::fs::read_to_string(own.join("status")).unwrap_or_default();
        let status_kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|kb| kb * 1024)
        };
        let boot = std::fs::read_to_string(proc.join("stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok());
        let limits = std::fs::read_to_string(own.join("limits")).unwrap_or_default();
        Process {
            cpu_seconds: field(14)
                .zip(field(15))
                .map(|(user, system)| (user + system) as f64 / TICKS_PER_SECOND),
            resident_bytes: status_kb("VmRSS:"),
            virtual_bytes: status_kb("VmSize:"),
            threads: status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok()),
            open_fds: std::fs::read_dir(own.join("fd"))
                .ok()
                .map(|dir| dir.count() as i64),
            max_fds: limits.lines().find_map(|l| {
                l.strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            }),
            start_time_seconds: boot
                .zip(field(22))
                .map(|(boot, ticks)| boot + (ticks as f64 / TICKS_PER_SECOND) as i64),
        }
    }

    /// Registers what was read.
    pub(super) fn register(self, registry: &mut Registry) {
        if let Some(seconds) = self.cpu_seconds {
            registry.register(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                ConstCounter::new(seconds),
            );
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                self.virtual_bytes,
            ),
            ("process_threads", "Number of OS threads", self.threads),
            (
                "process_open_fds",
                "Number of open file descriptors",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                self.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                self.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                registry.register(name, help, ConstGauge::new(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("self");
        std::fs::create_dir_all(own.join("fd")).unwrap();
        for fd in ["0", "1", "2", "7"] {
            std::fs::write(own.join("fd").join(fd), "").unwrap();
        }
        // A command name with a space and a parenthesis, as a process may name itself.
        std::fs::write(
            own.join("stat"),
            "4242 (port cullis) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 12345 \
             100000000 2000 18446744073709551615",
        )
        .unwrap();
        std::fs::write(
            own.join("status"),
            "Name:\tportcullis\nVmSize:\t  100000 kB\nVmRSS:\t    2048 kB\nThreads:\t9\n",
        )
        .unwrap();
        std::fs::write(
            own.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            1024                 524288               files\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("stat"), "cpu  1 2 3\nbtime 1700000000\n").unwrap();
        assert_eq!(
            Process::read(dir.path()),
            Process {
                cpu_seconds: Some(4.0),
                resident_bytes: Some(2048 * 1024),
                virtual_bytes: Some(100_000 * 1024),
                threads: Some(9),
                open_fds: Some(4),
                max_fds: Some(1024),
                start_time_seconds: Some(1_700_000_123),
            }
        );
        // Nothing readable: nothing registered.
        assert_eq!(
            Process::read(&dir.path().join("missing")),
            Process::default()
        );
    }
}
