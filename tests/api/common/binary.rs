//! The real `onramp` binary, started as a newcomer starts it: no configuration, in an empty
//! directory, so it creates `onramp.db` there, runs in development mode and publishes the
//! demo flow. Only the listen address differs (port 0, so tests run in parallel).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct DevServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The admin token the server prints at start.
    pub admin_token: String,
    /// The directory it runs in (holds onramp.db).
    pub dir: PathBuf,
}

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_onramp"))
}

/// A command for the binary with none of the environment a developer may have set, so it
/// behaves as on a fresh machine.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(binary());
    command.current_dir(dir).env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("ONRAMP_") {
            command.env_remove(key);
        }
    }
    command
}

impl DevServer {
    pub async fn start() -> DevServer {
        let dir = std::env::temp_dir().join(format!("onramp-dev-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut child = command(&dir)
            .args(["--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the onramp binary");
        let stdout = child.stdout.take().expect("stdout");
        let (base, admin_token) = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || {
                let mut lines = BufReader::new(stdout).lines();
                let mut base = None;
                let mut token = None;
                let mut token_next = false;
                while let Some(Ok(line)) = lines.next() {
                    if let Some(address) = line.strip_prefix("onramp listening on ") {
                        base = Some(address.trim().to_string());
                    } else if line.trim_start().starts_with("Token (admin") {
                        token_next = true;
                    } else if token_next && !line.trim().is_empty() {
                        token = Some(line.trim().to_string());
                        break;
                    }
                }
                // Keep reading so the server never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                (base.expect("the listening line"), token.expect("the development token"))
            }),
        )
        .await
        .expect("the server starts within 60 s")
        .expect("reading its output");
        DevServer { child, base, admin_token, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
