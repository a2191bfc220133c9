//! Shared by the end-to-end tests: a `ledger serve` child process, and what
//! the mixed workload's flows must have made.

use eventstore::testing::TestDatabase;
use replay::bench::mixed;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
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
    pub process: Process,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
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
        Self::start_with_env(database_url, admin_token, args, &[]).await
    }

    /// [`Server::start_with`] with more environment variables set.
    pub async fn start_with_env(
        database_url: &str,
        admin_token: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut serve = vec!["serve", "--listen", "127.0.0.1:0"];
        serve.extend(args);
        let mut all = vec![("LEDGER_ADMIN_TOKEN", admin_token)];
        all.extend(envs.iter().copied());
        // Killed on drop from here: a start that fails the test leaves no
        // server running.
        let mut server = Self {
            process: Process::spawn(database_url, &serve, &all),
            base: String::new(),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        let (child, log) = (&mut server.process.child, &server.process.log);
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
        server.base = base;
        server
    }

    /// The last lines the child logged.
    // Each test binary compiles this module; not every one reads the log.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        self.process.log.tail()
    }

    /// SIGKILL: no shutdown, no flush, whatever was in flight is cut off.
    #[allow(dead_code)]
    pub fn kill(mut self) {
        self.process.child.kill().unwrap();
        self.process.child.wait().unwrap();
    }
}

/// A `ledger` child process (`serve` inside a [`Server`], or `project`),
/// killed on drop, its log kept.
pub struct Process {
    pub child: Child,
    pub log: Log,
}

impl Process {
    /// Starts `ledger` with `args` on `database_url`.
    #[allow(dead_code)]
    pub fn start(database_url: &str, args: &[&str]) -> Self {
        Self::spawn(database_url, args, &[])
    }

    /// Starts `ledger` with `args` on `database_url`, and `envs` set.
    fn spawn(database_url: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .env("DATABASE_URL", database_url)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::capture(&mut child);
        Self { child, log }
    }

    /// Asserts that it still runs.
    #[allow(dead_code)]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("ledger exited ({status}); its log:\n{}", self.log.tail());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the complete `flows` made exactly their events (waited
/// for, bounded: the process manager and the scheduler react after the
/// answer), each process-manager reaction and each scheduled request under
/// one key of its own, the journal's totals in the read tables, and that
/// `ledger verify` finds nothing. `holds_due`: the ledger's clock is past
/// every commission's holding period.
#[allow(dead_code)]
pub async fn assert_mixed_effects(
    db: &TestDatabase,
    server: &Server,
    api_key: &str,
    flows: &[mixed::Flow],
    holds_due: bool,
) {
    let mut expected = mixed::expected(flows);
    if !holds_due {
        expected.events.remove("LinePayable");
        expected.scheduled -= expected.commissions;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counts = mixed::event_counts(db.store()).await.unwrap();
    let differs = |counts: &BTreeMap<String, i64>| {
        expected
            .events
            .iter()
            .any(|(event_type, count)| counts.get(*event_type).unwrap_or(&0) != count)
    };
    while differs(&counts) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        counts = mixed::event_counts(db.store()).await.unwrap();
    }
    for (event_type, count) in &expected.events {
        assert_eq!(
            counts.get(*event_type),
            Some(count),
            "{event_type}: {counts:?}"
        );
    }
    for (pattern, event_types, wanted) in [
        (
            "pm:commissions:%",
            &["LineAccrued"][..],
            expected.commissions,
        ),
        (
            "pm:scheduler:%",
            &["LinePayable", "InspectionClosed"],
            expected.scheduled,
        ),
    ] {
        let (events, keys) = mixed::reactions_under(db.store(), pattern, event_types)
            .await
            .unwrap();
        assert_eq!(
            (events, keys),
            (wanted, wanted),
            "{pattern} {event_types:?}"
        );
    }
    let (refused,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM scheduler_runs WHERE outcome = 'refused'")
            .fetch_one(db.store().pool())
            .await
            .unwrap();
    assert_eq!(refused, 0);
    let (head,): (i64,) = sqlx::query_as("SELECT max(tenant_seq) FROM events")
        .fetch_one(db.store().pool())
        .await
        .unwrap();
    let balances: Value = http_client()
        .get(format!(
            "{}/v1/journal/balances?min_seq={head}",
            server.base
        ))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (account, side, total) in &expected.totals {
        let row = balances["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["account"] == *account)
            .unwrap_or_else(|| panic!("no {account} in {balances}"));
        assert_eq!(
            row[*side],
            json!(total.to_string()),
            "{account}: {balances}"
        );
    }
    assert_verifies(db);
    // Still exactly so after the verify, while the workers and tickers ran
    // on: nothing came late, twice.
    let after = mixed::event_counts(db.store()).await.unwrap();
    for (event_type, count) in &expected.events {
        assert_eq!(
            after.get(*event_type),
            Some(count),
            "{event_type}: {after:?}"
        );
    }
}

/// Asserts that `ledger verify` finds nothing in `db`.
#[allow(dead_code)]
pub fn assert_verifies(db: &TestDatabase) {
    let verified = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["verify", "--json"])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "verify found problems: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}
