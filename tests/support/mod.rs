//! Shared by the end-to-end tests: a `ledger serve` child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `ledger serve` child process on a port of its own, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Server {
    /// Starts `ledger serve --listen 127.0.0.1:0` on `database_url` with
    /// `admin_token`, and waits until it listens.
    pub fn start(database_url: &str, admin_token: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("LEDGER_ADMIN_TOKEN", admin_token)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            if let Some(rest) = line.split("address=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base: format!("http://{address}"),
        }
    }

    /// SIGKILL: no shutdown, no flush, whatever was in flight is cut off.
    // Each test binary compiles this module; not every one kills.
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
