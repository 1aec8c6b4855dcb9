//! A real `redis-server` (the Debian package) on a free loopback port, without persistence, owned by the
//! test: stopped on drop, restartable on the same port. A missing `redis-server` fails the test. Also a
//! Sentinel-managed pair ([`SentinelSetup`]: master, replica, one sentinel), a three-master Redis Cluster
//! ([`ClusterSetup`], made with `redis-cli --cluster create`), and a TCP relay the test can cut and
//! restore ([`Relay`]).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Arguments after the port and the defaults (replicaof, cluster, sentinel).
    extra: Vec<String>,
    /// The working directory (a replica's copy of its master's data lands there, not in the checkout).
    dir: tempfile::TempDir,
}

/// A free port of 127.0.0.1 (never 6379).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 (never 6379).
    pub fn start() -> RedisServer {
        RedisServer::start_with(free_port(), Vec::new())
    }

    /// Starts a server on `port` with `extra` arguments after the defaults.
    pub fn start_with(port: u16, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            extra,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Runs `redis-cli -p <port> <args>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port(), args)
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Stops the server: every connection to it closes, and its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let sentinel = self.extra.iter().any(|a| a == "--sentinel");
        let mut command = Command::new("redis-server");
        if sentinel {
            // `redis-server FILE --sentinel`: the file comes first.
            command.args(&self.extra);
        }
        let child = command
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(if sentinel {
                &[][..]
            } else {
                &["--save", "", "--appendonly", "no"][..]
            })
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(if sentinel { &[][..] } else { &self.extra[..] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not answer on {}", self.addr);
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-cli -p <port> <args>`: its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("redis-cli comes with redis-server (apt-get install -y redis-server)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `ready` every 50 ms until it holds; panics with `what` after `within`.
fn wait_for(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ready() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master, its replica and one sentinel (quorum 1) watching them under [`SentinelSetup::MASTER`]; the
/// sentinel calls a master down after 1 s without an answer.
pub struct SentinelSetup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
    _dir: tempfile::TempDir,
}

impl SentinelSetup {
    pub const MASTER: &'static str = "portcullis-test";

    pub fn start() -> SentinelSetup {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(
            free_port(),
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ],
        );
        wait_for("the replica syncs", Duration::from_secs(20), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sentinel.conf");
        std::fs::write(
            &file,
            format!(
                "sentinel monitor {name} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                name = Self::MASTER,
                port = master.port()
            ),
        )
        .unwrap();
        let sentinel = RedisServer::start_with(
            free_port(),
            vec![file.to_string_lossy().into_owned(), "--sentinel".into()],
        );
        let setup = SentinelSetup {
            master,
            replica,
            sentinel,
            _dir: dir,
        };
        wait_for(
            "the sentinel sees the replica",
            Duration::from_secs(20),
            || {
                setup
                    .sentinel
                    .cli(&["SENTINEL", "replicas", Self::MASTER])
                    .contains(&setup.replica.port().to_string())
            },
        );
        setup
    }

    pub fn sentinel_url(&self) -> String {
        format!("redis://{}", self.sentinel.addr)
    }

    /// The master's port the sentinel names now.
    pub fn master_port(&self) -> u16 {
        let answer = self
            .sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", Self::MASTER]);
        answer
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until every write the master took has reached the replica (`WAIT 1`).
    pub fn replicated(&self) {
        let acked = self.master.cli(&["WAIT", "1", "5000"]);
        assert_eq!(acked.trim(), "1", "the replica did not acknowledge");
    }

    /// Kills the master and waits until the sentinel has promoted the replica.
    pub fn fail_over(&mut self) {
        self.master.stop();
        let replica = self.replica.port();
        wait_for(
            "the sentinel promotes the replica",
            Duration::from_secs(30),
            || self.master_port() == replica && self.replica.cli(&["ROLE"]).starts_with("master"),
        );
    }
}

/// Three masters in one Redis Cluster (no replicas), every slot served.
pub struct ClusterSetup {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl ClusterSetup {
    pub fn start() -> ClusterSetup {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // The cluster bus listens on port + 10000: both must be free.
                let port = loop {
                    let port = free_port();
                    if port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                        break port;
                    }
                };
                RedisServer::start_with(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        dir.path()
                            .join(format!("nodes-{port}.conf"))
                            .to_string_lossy()
                            .into_owned(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("redis-cli comes with redis-server");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            wait_for("the cluster is ok", Duration::from_secs(30), || {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        ClusterSetup { nodes, _dir: dir }
    }

    /// The node serving the slot of `key`, and its cluster node id (from `CLUSTER NODES`).
    pub fn owner(&self, key: &str) -> (usize, String) {
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        let table = self.nodes[0].cli(&["CLUSTER", "NODES"]);
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut bounds = range.split('-').map(|b| b.parse::<u16>());
                match (bounds.next(), bounds.next()) {
                    (Some(Ok(start)), Some(Ok(end))) => (start..=end).contains(&slot),
                    (Some(Ok(only)), None) => only == slot,
                    _ => false,
                }
            });
            if serves {
                let port = fields[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap();
                let index = self.nodes.iter().position(|n| n.port() == port).unwrap();
                return (index, fields[0].to_owned());
            }
        }
        panic!("no master serves slot {slot}:\n{table}");
    }

    /// Moves the slot of `key`, with its keys, from the node serving it to node `to` (the documented
    /// IMPORTING / MIGRATING / MIGRATE / SETSLOT NODE steps): clients still asking the old node get MOVED.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let (from, from_id) = self.owner(key);
        assert_ne!(from, to, "the slot is already there");
        let to_id = self.nodes[to].cli(&["CLUSTER", "MYID"]).trim().to_owned();
        let slot = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_owned();
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        assert_eq!(
            target
                .cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
                .trim(),
            "OK"
        );
        assert_eq!(
            source
                .cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
                .trim(),
            "OK"
        );
        loop {
            let keys = source.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = target.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            assert_eq!(source.cli(&args).trim(), "OK");
        }
        for node in &self.nodes {
            assert_eq!(
                node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
                    .trim(),
                "OK"
            );
        }
        assert_eq!(self.owner(key).0, to);
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}", n.addr))
            .collect()
    }
}

/// A TCP relay on 127.0.0.1:0 in front of `target`. [`Relay::cut`] closes every relayed connection and
/// refuses new ones (accepted, then closed at once) until [`Relay::restore`].
pub struct Relay {
    pub addr: SocketAddr,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(tokio::sync::watch::channel(true).0);
        let task = tokio::spawn({
            let up = std::sync::Arc::clone(&up);
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !*up.borrow() {
                        drop(inbound);
                        continue;
                    }
                    let mut down = up.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = down.wait_for(|up| !*up) => {}
                        }
                    });
                }
            }
        });
        Relay { addr, up, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
