//! Child processes for tests: the real `onramp` binary, node scripts. Stdout arrives line
//! by line (drained on a thread of its own so the child never blocks on a full pipe), stderr
//! is kept for failure messages, and the child is killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

use super::TEST_SECRET;
use super::ws::RECV;

/// A child process, killed when dropped. Its stdout arrives line by line; its stderr is
/// kept for failure messages.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` with no stdin.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command.stdin(Stdio::null());
        Process::start(name, command)
    }

    /// Starts `command` with a pipe to its stdin.
    pub fn spawn_with_stdin(name: &str, mut command: Command) -> (Process, ChildStdin) {
        command.stdin(Stdio::piped());
        let mut process = Process::start(name, command);
        let stdin = process.child.stdin.take().expect("stdin");
        (process, stdin)
    }

    fn start(name: &str, mut command: Command) -> Process {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        // Keep draining after the test stops listening, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Process { name: name.to_string(), child, lines, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The next stdout line, failing the test when none comes within `within`.
    pub async fn line(&mut self, within: Duration) -> String {
        match timeout(within, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{} closed its stdout; stderr:\n{}", self.name, self.stderr()),
            Err(_) => panic!("no output from {} within {within:?}; stderr:\n{}", self.name, self.stderr()),
        }
    }

    /// The remaining stdout lines, once the process has exited.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = timeout(RECV, self.lines.recv()).await.expect("stdout to end") {
            rest.push(line);
        }
        rest
    }

    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real `onramp` binary in production mode on a database, on a port of its own,
/// with the test secret and these extra environment variables (nothing else of the test's
/// own `ONRAMP_*` environment).
pub async fn start_onramp(name: &str, database_url: &str, env: &[(&str, &str)]) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_onramp"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ONRAMP_") {
            command.env_remove(key);
        }
    }
    command
        .env("DATABASE_URL", database_url)
        .env("ONRAMP_BIND", "127.0.0.1:0")
        .env("ONRAMP_JWT_SECRET", TEST_SECRET)
        .env("ONRAMP_MODE", "production")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    let mut process = Process::spawn(name, command);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = process.line(deadline.saturating_duration_since(Instant::now())).await;
        if let Some(addr) = line.strip_prefix("onramp listening on http://") {
            let addr = addr.trim().parse().unwrap_or_else(|e| panic!("{name}: bad address in `{line}`: {e}"));
            return (process, addr);
        }
    }
}

/// A GraphQL operation posted to a server process at `base_url` (`http://host:port`) with
/// `token`: its data, failing the test on any error.
pub async fn graphql(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    let response: serde_json::Value = client
        .post(format!("{base_url}/graphql"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(response.get("errors").is_none(), "{response:#}");
    response["data"].clone()
}
