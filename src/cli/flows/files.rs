//! A directory of flow files: finding them, reading them within limits, validating each
//! offline with the same rules as publishing, and writing canonical files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::domain::{FlowDefinition, Limits, validate_flow};

/// The most flow files one directory may hold (subdirectories included).
pub const MAX_FILES: usize = 10_000;
/// The largest flow file read: the definition limit is on compact JSON, and a
/// hand-formatted file carries indentation besides.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// How deep subdirectories are searched.
const MAX_DIR_DEPTH: usize = 16;

/// One problem with one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileProblem {
    pub file: PathBuf,
    /// A JSON path such as `$.steps[2].title`.
    pub path: String,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}: {}", self.file.display(), self.path, self.code, self.message)
    }
}

/// A flow file that validated.
#[derive(Clone, Debug)]
pub struct FlowFile {
    pub file: PathBuf,
    /// As written (shorthand and all): what translation imports edit.
    pub raw: Value,
    pub definition: FlowDefinition,
}

/// Every flow file of a directory, and every problem found in them.
#[derive(Debug, Default)]
pub struct Directory {
    pub flows: Vec<FlowFile>,
    pub problems: Vec<FileProblem>,
    /// Files looked at.
    pub files: usize,
}

impl Directory {
    pub fn by_key(&self) -> BTreeMap<&str, &FlowFile> {
        self.flows.iter().map(|f| (f.definition.key.as_str(), f)).collect()
    }
}

/// The `.json` files under `dir`, in a stable order. YAML is not read: the maintained
/// YAML crates for serde were deprecated or abandoned when this was written.
pub fn list(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((at, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&at).with_context(|| format!("reading directory {}", at.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading directory {}", at.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() && depth < MAX_DIR_DEPTH {
                pending.push((path, depth + 1));
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                found.push(path);
                anyhow::ensure!(found.len() <= MAX_FILES, "{} holds more than {MAX_FILES} flow files", dir.display());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Reads and validates every flow file under `dir` (`limits`: the server's product
/// limits; the defaults unless told). Unreadable directories are an error; everything
/// wrong with a file is a problem.
pub fn load(dir: &Path, limits: &Limits) -> anyhow::Result<Directory> {
    let mut out = Directory::default();
    let mut keys: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in list(dir)? {
        out.files += 1;
        let problem = |path: &str, code: &str, message: String| FileProblem {
            file: file.clone(),
            path: path.into(),
            code: code.into(),
            message,
        };
        let size = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
        if size > MAX_FILE_BYTES {
            out.problems.push(problem(
                "$",
                "DEFINITION_TOO_LARGE",
                format!("the file is {size} bytes; flow files are at most {MAX_FILE_BYTES}"),
            ));
            continue;
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let raw: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                out.problems.push(problem("$", "INVALID_JSON", format!("not JSON: {e}")));
                continue;
            }
        };
        match validate_flow(&raw, limits) {
            Ok(definition) => {
                if let Some(first) = keys.get(&definition.key) {
                    out.problems.push(problem(
                        "$.key",
                        "DUPLICATE_FLOW_KEY",
                        format!("flow `{}` is also defined in {}", definition.key, first.display()),
                    ));
                    continue;
                }
                keys.insert(definition.key.clone(), file.clone());
                out.flows.push(FlowFile { file, raw, definition });
            }
            Err(problems) => {
                out.problems.extend(problems.into_iter().map(|p| problem(&p.path, p.code, p.message)));
            }
        }
    }
    Ok(out)
}

/// JSON as the files are written: keys sorted, two-space indentation, a final newline,
/// so the same definition is always the same bytes and diffs show only real changes.
pub fn canonical_text(value: &Value) -> String {
    // serde_json's map is ordered by key (the `preserve_order` feature is not enabled).
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
