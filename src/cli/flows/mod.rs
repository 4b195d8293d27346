//! `onramp flows`: flow definitions kept as files in git and reviewed like code. `check`
//! validates a directory offline; `plan` compares it with a server's active versions;
//! `apply` publishes exactly what the plan showed; `export` writes a server's active
//! definitions as canonical files; `translations` moves texts to and from CSV.

pub mod client;
pub mod files;
pub mod translations;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::client::{ApiError, Migration, Server};
use self::files::{Directory, FileProblem};
use crate::domain::Limits;
use crate::domain::flow_diff::{self, FieldChange, FlowDiff};

/// Exit code of `plan` when changes are pending (0: nothing to do, 1: an error).
pub const CHANGES_PENDING: u8 = 2;

/// The result of `check`: problems, with file and JSON path; none when every file is valid.
pub struct CheckReport {
    pub directory: Directory,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.directory.problems.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.directory.problems {
            let _ = writeln!(out, "{p}");
        }
        let d = &self.directory;
        if self.ok() {
            let _ = writeln!(out, "{} flow file(s), {} flow(s): valid", d.files, d.flows.len());
        } else {
            let _ = writeln!(out, "{} problem(s) in {} flow file(s)", d.problems.len(), d.files);
        }
        out
    }
}

/// Validates every flow file under `dir` without a server.
pub fn check(dir: &Path) -> anyhow::Result<CheckReport> {
    Ok(CheckReport { directory: files::load(dir, &Limits::default())? })
}

/// What happens to one flow of the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// The key was never published: version 1.
    New,
    /// The file is the active version.
    Unchanged,
    /// The file differs from the active version (or none is active): the next version.
    NewVersion,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFlow {
    pub key: String,
    pub file: PathBuf,
    pub action: Action,
    /// The key's newest version on the server (any status), 0 when none: the
    /// precondition `apply` publishes under.
    pub expected_version: i32,
    /// The active version the file was compared with.
    pub active_version: Option<i32>,
    /// The canonical definition that would be published.
    pub definition: Value,
    /// Against the active version; empty for NEW and UNCHANGED.
    pub diff: FlowDiff,
    /// Moving the enrollments on the active version to the new one (dry run).
    pub migration: Option<Migration>,
}

/// A flow on the server that the directory no longer has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub key: String,
    /// Its active versions: what `--prune` deprecates.
    pub active_versions: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub server: String,
    pub flows: Vec<PlannedFlow>,
    /// Flows with active versions on the server and no file.
    pub removed: Vec<Removed>,
    /// Whether `removed` will be deprecated.
    pub prune: bool,
}

impl Plan {
    pub fn publishes(&self) -> impl Iterator<Item = &PlannedFlow> {
        self.flows.iter().filter(|f| f.action != Action::Unchanged)
    }

    pub fn deprecates(&self) -> impl Iterator<Item = &Removed> {
        self.removed.iter().filter(|_| self.prune)
    }

    pub fn has_changes(&self) -> bool {
        self.publishes().next().is_some() || self.deprecates().next().is_some()
    }

    /// The same changes under the same preconditions (the migration previews may differ:
    /// subjects move on between a plan and its apply).
    pub fn same_changes(&self, other: &Plan) -> bool {
        let changes = |p: &Plan| {
            let flows: Vec<_> = p
                .flows
                .iter()
                .map(|f| (f.key.clone(), f.action, f.expected_version, f.active_version, f.definition.clone()))
                .collect();
            let removed: Vec<Removed> = p.deprecates().cloned().collect();
            (flows, removed)
        };
        changes(self) == changes(other)
    }

    /// For people: per flow new / unchanged / new version, the step-level diff and the
    /// migration preview, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.flows {
            match f.action {
                Action::Unchanged => {
                    let _ =
                        writeln!(out, "= {}: unchanged (v{})", f.key, f.active_version.unwrap_or(f.expected_version));
                }
                Action::New => {
                    let steps = f.definition["steps"].as_array().map_or(0, Vec::len);
                    let _ = writeln!(out, "+ {}: new (v1, {steps} steps) from {}", f.key, f.file.display());
                }
                Action::NewVersion => {
                    let from = f.active_version.map_or("no active version".to_string(), |v| format!("v{v}"));
                    let _ = writeln!(out, "~ {}: new version ({from} -> v{})", f.key, f.expected_version + 1);
                    render_diff(&mut out, &f.diff);
                    if let (Some(m), Some(v)) = (&f.migration, f.active_version) {
                        let _ = write!(
                            out,
                            "    migration of enrollments on v{v} (with --migrate): {} move, {} become complete",
                            m.moved, m.became_complete
                        );
                        if !m.dropped_completed.is_empty() {
                            let dropped: Vec<String> =
                                m.dropped_completed.iter().map(|(k, n)| format!("{k} ({n})")).collect();
                            let _ = write!(out, ", completed steps dropped: {}", dropped.join(", "));
                        }
                        out.push('\n');
                    }
                }
            }
        }
        for r in &self.removed {
            let versions: Vec<String> = r.active_versions.iter().map(|v| format!("v{v}")).collect();
            if self.prune {
                let _ = writeln!(out, "- {}: deprecate {} (not in the directory)", r.key, versions.join(", "));
            } else {
                let _ = writeln!(
                    out,
                    "? {}: not in the directory, kept ({}; --prune deprecates it)",
                    r.key,
                    versions.join(", ")
                );
            }
        }
        let count = |a: Action| self.flows.iter().filter(|f| f.action == a).count();
        let _ = writeln!(
            out,
            "Plan: {} new, {} new version(s), {} unchanged, {} to deprecate.{}",
            count(Action::New),
            count(Action::NewVersion),
            count(Action::Unchanged),
            self.deprecates().count(),
            if self.has_changes() { "" } else { " Nothing to do." }
        );
        out
    }
}

fn render_diff(out: &mut String, diff: &FlowDiff) {
    for change in &diff.fields {
        let _ = writeln!(out, "    {}", field_line(change));
    }
    for key in &diff.added_steps {
        let _ = writeln!(out, "    + step {key}");
    }
    for key in &diff.removed_steps {
        let _ = writeln!(out, "    - step {key}");
    }
    for step in &diff.changed_steps {
        let _ = writeln!(out, "    ~ step {}", step.key);
        for change in &step.fields {
            let _ = writeln!(out, "        {}", field_line(change));
        }
    }
}

fn field_line(change: &FieldChange) -> String {
    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_string(), |v| v.to_string());
    format!("{}: {} -> {}", change.field, show(&change.before), show(&change.after))
}

/// Where to plan against, and how.
pub struct Target<'a> {
    pub server: &'a str,
    pub token: &'a str,
}

/// Compares the directory with the server's active versions. Fails on an invalid file:
/// run `check` for the list.
pub async fn plan(dir: &Path, target: &Target<'_>, prune: bool) -> anyhow::Result<Plan> {
    let directory = files::load(dir, &Limits::default())?;
    refuse_problems(&directory.problems)?;
    let server = Server::new(target.server, target.token)?;
    plan_with(&server, target.server, &directory, prune).await
}

fn refuse_problems(problems: &[FileProblem]) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    anyhow::bail!("{} problem(s) in the flow files:\n{}", problems.len(), listed.join("\n"))
}

async fn plan_with(server: &Server, url: &str, directory: &Directory, prune: bool) -> anyhow::Result<Plan> {
    let on_server = server.flows().await?;
    let mut flows = Vec::new();
    for file in &directory.flows {
        let key = &file.definition.key;
        let definition = file.definition.to_json();
        let current = on_server.get(key);
        let expected_version = current.map_or(0, |c| c.latest);
        let active = current.and_then(|c| c.active.as_ref());
        let (action, diff) = match (current, active) {
            (None, _) => (Action::New, FlowDiff::default()),
            (Some(_), Some((_, stored))) if *stored == definition => (Action::Unchanged, FlowDiff::default()),
            (Some(_), Some((_, stored))) => (Action::NewVersion, flow_diff::diff(stored, &definition)),
            (Some(_), None) => (Action::NewVersion, flow_diff::diff(&Value::Null, &definition)),
        };
        let migration = match (action, active) {
            (Action::NewVersion, Some((version, _))) => Some(
                server
                    .preview_migration(key, *version, &definition)
                    .await
                    .with_context(|| format!("previewing the migration of `{key}`"))?,
            ),
            _ => None,
        };
        flows.push(PlannedFlow {
            key: key.clone(),
            file: file.file.clone(),
            action,
            expected_version,
            active_version: active.map(|(v, _)| *v),
            definition,
            diff,
            migration,
        });
    }
    let in_dir = directory.by_key();
    let removed = on_server
        .iter()
        .filter(|(key, f)| !in_dir.contains_key(key.as_str()) && !f.active_versions.is_empty())
        .map(|(key, f)| Removed { key: key.clone(), active_versions: f.active_versions.clone() })
        .collect();
    Ok(Plan { server: url.to_string(), flows, removed, prune })
}

/// What `apply` did.
#[derive(Debug, Default)]
pub struct Applied {
    /// (key, version published)
    pub published: Vec<(String, i32)>,
    /// (key, from, to, what moved)
    pub migrated: Vec<(String, i32, i32, Migration)>,
    /// (key, version)
    pub deprecated: Vec<(String, i32)>,
}

impl Applied {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (key, version) in &self.published {
            let _ = writeln!(out, "published {key} v{version}");
        }
        for (key, from, to, m) in &self.migrated {
            let _ = writeln!(
                out,
                "migrated {key} v{from} -> v{to}: {} moved, {} became complete",
                m.moved, m.became_complete
            );
        }
        for (key, version) in &self.deprecated {
            let _ = writeln!(out, "deprecated {key} v{version}");
        }
        if self.published.is_empty() && self.deprecated.is_empty() {
            out.push_str("Nothing to apply.\n");
        }
        out
    }
}

pub struct ApplyOptions<'a> {
    /// A plan saved by `plan --out`: apply it, or nothing when the files or the server
    /// changed since.
    pub saved_plan: Option<&'a Path>,
    /// Move the enrollments on the previous active version to the new one.
    pub migrate: bool,
    /// Deprecate flows that are no longer in the directory.
    pub prune: bool,
}

/// Publishes what `plan` shows, each version under the plan's precondition (the key's
/// newest version is still the one planned against), so a change made on the server
/// after the plan is refused, never overwritten.
pub async fn apply(dir: &Path, target: &Target<'_>, options: &ApplyOptions<'_>) -> anyhow::Result<Applied> {
    let directory = files::load(dir, &Limits::default())?;
    refuse_problems(&directory.problems)?;
    let server = Server::new(target.server, target.token)?;
    let now = plan_with(&server, target.server, &directory, options.prune).await?;
    let plan = match options.saved_plan {
        None => now,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let saved: Plan =
                serde_json::from_str(&text).with_context(|| format!("{} is not a plan", path.display()))?;
            if !saved.same_changes(&now) {
                anyhow::bail!(
                    "the server or the files changed since the plan in {}: nothing applied; run plan again\nnow:\n{}",
                    path.display(),
                    now.render()
                );
            }
            saved
        }
    };
    let mut applied = Applied::default();
    for f in plan.publishes() {
        let version = match server.publish(&f.definition, f.expected_version).await {
            Ok(v) => v,
            Err(e) => {
                let conflict = e.downcast_ref::<ApiError>().is_some_and(|a| a.code.as_deref() == Some("CONFLICT"));
                let done = applied.render();
                return Err(if conflict {
                    anyhow::anyhow!(
                        "flow `{}` changed on the server since the plan (it was at v{}): not published; run plan again\nalready applied:\n{done}",
                        f.key,
                        f.expected_version
                    )
                } else {
                    e.context(format!("publishing `{}`; already applied:\n{done}", f.key))
                });
            }
        };
        applied.published.push((f.key.clone(), version));
        if options.migrate
            && let Some(from) = f.active_version
        {
            let m = server.migrate(&f.key, from, version).await.with_context(|| format!("migrating `{}`", f.key))?;
            applied.migrated.push((f.key.clone(), from, version, m));
        }
    }
    for r in plan.deprecates() {
        for version in &r.active_versions {
            server.deprecate(&r.key, *version).await.with_context(|| format!("deprecating `{}` v{version}", r.key))?;
            applied.deprecated.push((r.key.clone(), *version));
        }
    }
    Ok(applied)
}

/// Writes each flow's active definition to `DIR/<key>.json`, canonical: sorted keys,
/// two-space indentation, a final newline. Returns the files written.
pub async fn export(dir: &Path, target: &Target<'_>) -> anyhow::Result<Vec<PathBuf>> {
    let server = Server::new(target.server, target.token)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (key, flow) in server.flows().await? {
        let Some((_, definition)) = flow.active else { continue };
        // Keys are letters, digits, `_` and `-`: safe as file names.
        anyhow::ensure!(
            crate::domain::validation::is_valid_key(&key),
            "the server has a flow key `{key}` unfit for a file name"
        );
        let path = dir.join(format!("{key}.json"));
        files::write_atomically(&path, &files::canonical_text(&definition))?;
        written.push(path);
    }
    Ok(written)
}
