//! The tests' Node.js packages (tests/js): reference clients and audits written by others,
//! run against the real server.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Installs tests/js's locked dependencies once per test run, when they are missing.
fn install_js_dependencies() -> Result<(), String> {
    let dir = js_dir();
    let installed = ["graphql-ws", "ws", "graphql-http", "standardwebhooks", "ajv", "ajv-formats", "playwright-core"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").exists());
    if installed {
        return Ok(());
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `npm ci` in {} (Node.js and npm are required): {e}", dir.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

pub async fn ensure_js_dependencies() {
    static INSTALL: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| INSTALL.get_or_init(install_js_dependencies).clone())
        .await
        .expect("npm ci task");
    if let Err(why) = result {
        panic!("{why}");
    }
}
