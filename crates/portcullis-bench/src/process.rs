//! The servers the bench starts as child processes (portcullis and the no-op server), free loopback
//! ports, readiness, and CPU time and memory read from `/proc`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A loopback address nothing listens on (the OS picks the port; the bench passes it on).
pub fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A server process; stopped when dropped.
pub struct Server {
    pub name: &'static str,
    pub grpc: SocketAddr,
    /// The HTTP forward-auth listener, when the configuration has one.
    pub http: Option<SocketAddr>,
    /// From the spawn until the server answered ready (`/readyz` 200, or a connection for the no-op one).
    pub ready_after: Duration,
    started: Instant,
    child: std::process::Child,
    log: PathBuf,
}

impl Server {
    /// `portcullis serve --config CONFIG` on free loopback ports (with `http`, its HTTP forward-auth
    /// listener too: the configuration must set `server.http_mode`), its log in `dir/log`; waits until
    /// `/readyz` answers 200.
    pub async fn portcullis(
        config: &Path,
        dir: &Path,
        log: &str,
        http: bool,
    ) -> anyhow::Result<Server> {
        let grpc = free_loopback_addr()?;
        let admin = free_loopback_addr()?;
        let http = if http {
            Some(free_loopback_addr()?)
        } else {
            None
        };
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(grpc.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string());
        if let Some(http) = http {
            command.arg("--http-listen").arg(http.to_string());
        }
        let mut server = Server::spawn("portcullis", grpc, command, &dir.join(log))?;
        server.http = http;
        let ready = format!("http://{admin}/readyz");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        server
            .wait_until(|| {
                let client = client.clone();
                let ready = ready.clone();
                async move {
                    matches!(client.get(&ready).send().await, Ok(r) if r.status().is_success())
                }
            })
            .await?;
        Ok(server)
    }

    /// `portcullis bench --serve-noop ADDR` on a free loopback port; waits until it accepts connections.
    pub async fn noop(dir: &Path) -> anyhow::Result<Server> {
        let grpc = free_loopback_addr()?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("bench")
            .arg("--serve-noop")
            .arg(grpc.to_string());
        let mut server = Server::spawn("noop", grpc, command, &dir.join("noop.log"))?;
        server
            .wait_until(|| async move { tokio::net::TcpStream::connect(grpc).await.is_ok() })
            .await?;
        Ok(server)
    }

    fn spawn(
        name: &'static str,
        grpc: SocketAddr,
        mut command: Command,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let log_file = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start the {name} server"))?;
        Ok(Server {
            name,
            grpc,
            http: None,
            started: Instant::now(),
            ready_after: Duration::ZERO,
            child,
            log: log.to_owned(),
        })
    }

    /// Polls `ready` until it holds (then [`Server::ready_after`] is set) or 30 s have passed.
    async fn wait_until<F, Fut>(&mut self, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready().await {
                self.ready_after = self.started.elapsed();
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "the {} server did not become ready within 30 s; its log ({}):\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds a process has used so far (all its threads), from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which is in parentheses and may hold spaces): state is field 3,
    // utime field 14 and stime field 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The resident set size in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The peak resident set size in bytes (the high-water mark), from `/proc/PID/status`.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field).map(|kib| kib * 1024)
}

/// A `Field:   1234 kB` line's number.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert!(cpu_seconds(std::process::id()).is_some());
        // Both are read from the running process; they are not compared: the kernel keeps the RSS
        // counters per thread and folds them in lazily, so two reads of a process whose other test threads
        // allocate can see the high-water mark below an earlier size (the parsing is checked below).
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
        let status = "Name:\tportcullis\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }
}
