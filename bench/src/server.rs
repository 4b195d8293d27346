//! The server under test: the release binary, started against the bench database, or
//! one already running (given by URL).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const JWT_SECRET: &str = "onramp-bench-secret-not-for-production";

pub struct Server {
    pub url: String,
    /// The process, when the bench started it (memory and CPU are read from it).
    pub child: Option<Child>,
}

impl Server {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Builds (when needed) and starts `onramp serve` on a free port. The file limit is
    /// raised for thousands of websockets.
    pub async fn start(database_url: &str, pool: u32) -> anyhow::Result<Server> {
        let binary = build().await?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" serve"#)
            .arg(&binary)
            .env("DATABASE_URL", database_url)
            .env("ONRAMP_BIND", "127.0.0.1:0")
            .env("ONRAMP_JWT_SECRET", JWT_SECRET)
            .env("ONRAMP_DB_MAX_CONNECTIONS", pool.to_string())
            // The webhooks scenario's receiver listens on loopback, over http.
            .env("ONRAMP_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("ONRAMP_WEBHOOK_ALLOW_HTTP", "true")
            // The nudges scenario runs the scheduler in process on a clock of its own.
            .env("ONRAMP_NUDGE_NO_SCHEDULER", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("onramp listening on ") {
                    return Ok::<_, anyhow::Error>(url.trim().to_string());
                }
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not start within 120 s")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { url, child: Some(child) })
    }
}

/// The `onramp` binary built with this bench's profile (release for measuring; a debug
/// bench, as the CI smoke run uses, starts a debug server), built first: cargo makes that
/// a no-op when it is current.
async fn build() -> anyhow::Result<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (profile, flags): (&str, &[&str]) =
        if cfg!(debug_assertions) { ("debug", &[]) } else { ("release", &["--release"]) };
    let status = Command::new(cargo)
        .arg("build")
        .args(flags)
        .args(["--quiet", "-p", "onramp", "--bin", "onramp"])
        .current_dir(&workspace)
        .status()
        .await
        .context("running cargo build for the server")?;
    if !status.success() {
        bail!("building the server failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.join("target"));
    Ok(target.join(profile).join("onramp"))
}
