//! Shared by the end-to-end tests: a `ledger serve` child process.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a child may take from spawn to answering `/healthz` with 200.
const START_BOUND: Duration = Duration::from_secs(60);

/// Lines of the child's log kept for failure messages.
const LOG_LINES_KEPT: usize = 40;

/// An HTTP client whose every request fails after a minute rather than
/// hang the test.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A `ledger serve` child process on a port of its own, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: Log,
}

/// The last lines a child wrote to stderr, whatever `LEDGER_LOG` lets
/// through.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<VecDeque<String>>>);

impl Log {
    /// Drains `child`'s stderr into the kept lines, so the child never blocks
    /// on a full pipe.
    pub fn capture(child: &mut Child) -> Self {
        let log = Self::default();
        let lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut lines = kept.0.lock().unwrap();
                lines.push_back(line);
                if lines.len() > LOG_LINES_KEPT {
                    lines.pop_front();
                }
            }
        });
        log
    }

    /// The kept lines, one per line.
    pub fn tail(&self) -> String {
        let lines = self.0.lock().unwrap();
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The TCP port process `pid` listens on, once it has bound one: its socket
/// inodes (`/proc/<pid>/fd`) matched against the listening sockets of its
/// network namespace (`/proc/<pid>/net/tcp`). Reads no log line, so it works
/// with any `LEDGER_LOG`, and leaves no window for another process to take
/// the port (the child binds port 0 itself).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    // sl local_address rem_address st ... inode; st 0A is LISTEN.
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(3) != Some(&"0A") || !inodes.contains(*fields.get(9)?) {
            return None;
        }
        u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()
    })
}

impl Server {
    /// Starts `ledger serve --listen 127.0.0.1:0` on `database_url` with
    /// `admin_token`, and waits until it answers `/healthz` with 200.
    pub async fn start(database_url: &str, admin_token: &str) -> Self {
        Self::start_with(database_url, admin_token, &[]).await
    }

    /// [`Server::start`] with more `serve` arguments.
    pub async fn start_with(database_url: &str, admin_token: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("LEDGER_ADMIN_TOKEN", admin_token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::capture(&mut child);
        let client = reqwest::Client::new();
        let started = Instant::now();
        let base = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "ledger serve {args:?} exited ({status}) before answering /healthz; its log:\n{}",
                    log.tail()
                );
            }
            if let Some(port) = listening_port(child.id()) {
                let base = format!("http://127.0.0.1:{port}");
                let health = client
                    .get(format!("{base}/healthz"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if health.is_ok_and(|response| response.status() == 200) {
                    break base;
                }
            }
            assert!(
                started.elapsed() < START_BOUND,
                "ledger serve {args:?} did not answer /healthz with 200 within {START_BOUND:?}; its log:\n{}",
                log.tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { child, base, log }
    }

    /// The last lines the child logged.
    // Each test binary compiles this module; not every one reads the log.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        self.log.tail()
    }

    /// SIGKILL: no shutdown, no flush, whatever was in flight is cut off.
    #[allow(dead_code)]
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
