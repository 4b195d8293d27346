//! The TypeScript client package (clients/typescript): it compiles under `tsc --strict`,
//! its generated code matches schema.graphql, and it works against a real server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::json;

use crate::common::{TEST_SECRET, TestApp, sign_hmac, unix_now};

pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

pub fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap_or_else(|e| panic!("cannot run {program} {args:?} (Node.js and npm are required): {e}"))
}

pub fn describe(what: &str, output: &Output) -> String {
    format!(
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `npm ci` once per test run when the locked packages are missing, then one build into
/// dist/ with the package's strict tsconfig; both tests share it.
fn prepare() -> Result<(), String> {
    let dir = package_dir();
    let installed = ["graphql-ws", "graphql", "typescript", "@graphql-codegen/cli", "ws"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").exists());
    if !installed {
        let output = run(&dir, "npm", &["ci", "--no-audit", "--no-fund"], &[]);
        if !output.status.success() {
            return Err(describe("npm ci in clients/typescript", &output));
        }
    }
    let output = run(&dir, "npx", &["--no-install", "tsc", "-p", "tsconfig.json", "--strict"], &[]);
    if !output.status.success() {
        return Err(describe("tsc --strict", &output));
    }
    Ok(())
}

pub async fn prepared() {
    static PREPARE: OnceLock<Result<(), String>> = OnceLock::new();
    let result =
        tokio::task::spawn_blocking(|| PREPARE.get_or_init(prepare).clone()).await.expect("the preparing task");
    if let Err(why) = result {
        panic!("{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_code_matches_the_schema() {
    prepared().await;
    let out = std::env::temp_dir().join(format!("onramp-codegen-{}.ts", uuid::Uuid::new_v4()));
    let output = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            run(
                &package_dir(),
                "npx",
                &["--no-install", "graphql-codegen", "--config", "codegen.ts"],
                &[("CODEGEN_OUT", out.to_str().expect("a UTF-8 path"))],
            )
        }
    })
    .await
    .expect("codegen");
    assert!(output.status.success(), "{}", describe("graphql-codegen", &output));
    let fresh = std::fs::read_to_string(&out).expect("the generated file");
    let _ = std::fs::remove_file(&out);
    let checked_in = std::fs::read_to_string(package_dir().join("src/generated/graphql.ts")).unwrap_or_default();
    assert!(
        fresh == checked_in,
        "clients/typescript/src/generated is out of date with schema.graphql or src/operations.graphql. \
         Regenerate it with:\n\n    cd clients/typescript && npm run generate\n"
    );
}

async fn client_against(app: TestApp) {
    prepared().await;
    let flow = "client_flow";
    app.publish(json!({
        "key": flow,
        "title": "Get started",
        "steps": [
            { "key": "verify_email", "title": "Verify your email", "points": 10 },
            { "key": "profile", "title": "Complete your profile", "dependsOn": ["verify_email"],
              "trigger": { "event": "profile.completed" } },
            { "key": "tour", "title": "Take the tour", "required": false }
        ]
    }))
    .await;
    let now = unix_now();
    let expired = sign_hmac(
        &json!({ "sub": "alice", "role": "user", "iat": now - 7200, "exp": now - 3600 }),
        jsonwebtoken::Algorithm::HS256,
        TEST_SECRET,
    );
    let env = [
        ("ONRAMP_URL", app.url("/graphql")),
        ("ONRAMP_TOKEN", app.user("alice")),
        ("ONRAMP_EXPIRED_TOKEN", expired),
        ("ONRAMP_SERVICE_TOKEN", app.service()),
        ("ONRAMP_FLOW", flow.to_string()),
    ];
    let output = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(&package_dir(), "timeout", &["60", "node", "test/e2e.mjs"], &env)
    })
    .await
    .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe("the client's end-to-end run", &output));
    assert!(stdout.lines().any(|l| l == r#"{"ok":true}"#), "{stdout}");
    for check in
        ["status with token refresh", "watchProgress reconnects", "completeStep, seen live", "trackEvents, seen live"]
    {
        assert!(stdout.contains(check), "the run skipped `{check}`:\n{stdout}");
    }
}

crate::both!(client_against);
