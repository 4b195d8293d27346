//! Every example in README.md, run as written against a fresh server started the way the
//! README starts it (the real binary, no configuration, the demo flow), in the README's
//! order: shell blocks in bash with `onramp` on the PATH, GraphQL blocks with the token
//! their first line names (`# as alice`, `# as admin`, `# as service`), flow definitions
//! through validateFlow, the JavaScript clients with node, and the TypeScript client example
//! type-checked under `tsc --strict` against the built package. The only change made to an
//! example is the server's address (the test listens on a free port, not 8080).
//! Blocks marked `no-run` (the set-up commands) and `text` blocks are not run.

use std::path::Path;
use std::process::{Command, Stdio};

use async_graphql::parser::parse_query;
use async_graphql::parser::types::DocumentOperations;
use serde_json::{Value, json};

use crate::client_typescript;
use crate::common::binary::{self, DevServer};
use crate::common::js::{ensure_js_dependencies, js_dir};

struct Block {
    info: String,
    body: String,
    /// 1-based line of the opening fence, for messages.
    line: usize,
}

/// The fenced blocks of a Markdown document, in order.
fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some(Block { info: info.trim().to_string(), body: String::new(), line: index + 1 });
                }
            }
            Some(block) => {
                if line.trim_end() == "```" {
                    blocks.push(open.take().expect("an open block"));
                } else {
                    block.body.push_str(line);
                    block.body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code block");
    blocks
}

/// The README's address, replaced by the test server's.
fn at_server(text: &str, server: &DevServer) -> String {
    let host = server.base.trim_start_matches("http://");
    text.replace("localhost:8080", host).replace("127.0.0.1:8080", host)
}

/// `onramp token ...` as the README runs it.
fn mint(args: &[&str], dir: &Path) -> String {
    let output = binary::command(dir).arg("token").args(args).output().expect("run onramp token");
    assert!(output.status.success(), "onramp token {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("a token").trim().to_string()
}

/// The names of a document's operations in the order they are written.
fn operation_names(document: &str) -> Vec<Option<String>> {
    match parse_query(document).expect("the example parses as GraphQL").operations {
        DocumentOperations::Single(_) => vec![None],
        DocumentOperations::Multiple(operations) => {
            let mut names: Vec<(usize, String)> = operations
                .keys()
                .map(|name| {
                    let at = ["query ", "mutation ", "subscription "]
                        .iter()
                        .find_map(|keyword| document.find(&format!("{keyword}{name} ")))
                        .expect("the operation's definition");
                    (at, name.to_string())
                })
                .collect();
            names.sort();
            names.into_iter().map(|(_, name)| Some(name)).collect()
        }
    }
}

async fn run_graphql(block: &Block, server: &DevServer, tokens: &[(&str, String)]) {
    let first = block.body.lines().next().unwrap_or_default();
    let who = first
        .strip_prefix("# as ")
        .and_then(|rest| rest.split(|c: char| !c.is_alphanumeric()).next())
        .unwrap_or_else(|| panic!("README.md:{}: a GraphQL example names its token first: `# as alice`", block.line));
    let token = &tokens.iter().find(|(name, _)| *name == who).unwrap_or_else(|| panic!("no token for {who}")).1;
    let client = reqwest::Client::new();
    for operation in operation_names(&block.body) {
        let mut request = json!({ "query": block.body });
        if let Some(name) = &operation {
            request["operationName"] = json!(name);
        }
        let answer: Value = client
            .post(server.url("/graphql"))
            .bearer_auth(token)
            .json(&request)
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("a JSON answer");
        assert!(
            answer.get("errors").is_none() && answer["data"].is_object(),
            "README.md:{} ({}) failed: {answer:#}",
            block.line,
            operation.as_deref().unwrap_or("the operation")
        );
    }
}

fn run_shell(block: &Block, server: &DevServer, dir: &Path) {
    let bin_dir = binary::binary().parent().expect("the binary's directory");
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command.args(["-euo", "pipefail", "-c", &at_server(&block.body, server)]).current_dir(dir).env("PATH", path);
    command.env_remove("DATABASE_URL");
    for (key, _) in std::env::vars() {
        if key.starts_with("ONRAMP_") {
            command.env_remove(key);
        }
    }
    let output = command.stdin(Stdio::null()).output().expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README.md:{} failed ({}):\n{stdout}\n{}",
        block.line,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    if block.body.contains("curl") {
        let answer: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("README.md:{}: {e}: {stdout}", block.line));
        assert!(answer.get("errors").is_none() && answer["data"].is_object(), "README.md:{}: {answer:#}", block.line);
    }
}

async fn check_json(block: &Block, server: &DevServer, admin: &str) {
    let value: Value = serde_json::from_str(&block.body)
        .unwrap_or_else(|e| panic!("README.md:{}: a json block that is not JSON ({e}); use `text`", block.line));
    if value.get("key").is_some() && value.get("steps").is_some() {
        let answer: Value = reqwest::Client::new()
            .post(server.url("/graphql"))
            .bearer_auth(admin)
            .json(&json!({
                "query": "query($d: JSON!) { validateFlow(definition: $d) { path code message } }",
                "variables": { "d": value },
            }))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(answer["data"]["validateFlow"], json!([]), "README.md:{}: {answer:#}", block.line);
    }
}

fn run_node(block: &Block, server: &DevServer, alice: &str) {
    let file = js_dir().join(format!("readme-example-{}.mjs", uuid::Uuid::new_v4()));
    let client = block.body.contains("graphql-ws");
    let source = if client {
        // What the example leaves to its reader: a browser's WebSocket (Node 20 has none),
        // the token, and what to do with a snapshot.
        format!(
            "import WebSocket from 'ws';\nglobalThis.WebSocket ??= WebSocket;\nconst token = {alice:?};\n\
             const render = (status) => {{ console.log(JSON.stringify(status)); process.exit(0); }};\n{}",
            at_server(&block.body, server)
        )
    } else {
        block.body.clone()
    };
    std::fs::write(&file, source).expect("write the example");
    // A client that never gets its snapshot would wait forever.
    let mut command = Command::new("timeout");
    command.args(["30", "node"]);
    if !client {
        // A server that runs until stopped: checked, not started.
        command.arg("--check");
    }
    let output = command.arg(&file).current_dir(js_dir()).stdin(Stdio::null()).output();
    let _ = std::fs::remove_file(&file);
    let output = output.expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README.md:{} failed ({}):\n{stdout}\n{}",
        block.line,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    if client {
        let snapshot: Value = serde_json::from_str(stdout.trim()).expect("the snapshot the example renders");
        assert!(snapshot["revision"].is_number() && snapshot["percentComplete"].is_number(), "{snapshot}");
    }
}

/// Type-checks a TypeScript example inside the client package, where `@onramp/client`
/// resolves to the package itself.
async fn check_typescript(block: &Block) {
    client_typescript::prepared().await;
    let dir = client_typescript::package_dir();
    let file = format!("test/readme-example-{}.ts", uuid::Uuid::new_v4());
    std::fs::write(dir.join(&file), &block.body).expect("write the example");
    let output = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let file = file.clone();
        move || {
            let args = [
                "--no-install",
                "tsc",
                "--noEmit",
                "--strict",
                "--target",
                "ES2022",
                "--module",
                "NodeNext",
                "--moduleResolution",
                "NodeNext",
                "--skipLibCheck",
                &file,
            ];
            client_typescript::run(&dir, "npx", &args, &[])
        }
    })
    .await
    .expect("tsc");
    let _ = std::fs::remove_file(dir.join(&file));
    assert!(
        output.status.success(),
        "README.md:{}: {}",
        block.line,
        client_typescript::describe("tsc --strict", &output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_runs_as_written() {
    ensure_js_dependencies().await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let server = DevServer::start().await;
    // "From any directory": not the repository, not the server's.
    let elsewhere = std::env::temp_dir().join(format!("onramp-readme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&elsewhere).expect("a directory");
    let alice = mint(&["--sub", "alice"], &elsewhere);
    let tokens = [
        ("alice", alice.clone()),
        ("admin", server.admin_token.clone()),
        ("service", mint(&["--sub", "backend", "--role", "service"], &elsewhere)),
    ];
    let mut ran = std::collections::BTreeMap::<String, usize>::new();
    for block in fenced_blocks(&readme) {
        let language = block.info.split_whitespace().next().unwrap_or("").to_string();
        if block.info.split_whitespace().any(|word| word == "no-run") || language == "text" || language.is_empty() {
            continue;
        }
        match language.as_str() {
            "sh" => run_shell(&block, &server, &elsewhere),
            "graphql" => run_graphql(&block, &server, &tokens).await,
            "json" => check_json(&block, &server, &server.admin_token).await,
            "js" => run_node(&block, &server, &alice),
            "ts" => check_typescript(&block).await,
            other => panic!("README.md:{}: no way to run a `{other}` block; mark it `no-run` or `text`", block.line),
        }
        *ran.entry(language).or_default() += 1;
    }
    let _ = std::fs::remove_dir_all(&elsewhere);
    // A guard against a parser that silently finds nothing.
    assert!(ran["graphql"] >= 7 && ran["sh"] >= 1 && ran["json"] >= 5 && ran["js"] >= 2 && ran["ts"] >= 1, "{ran:?}");
}
