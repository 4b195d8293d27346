//! Translations as CSV for translators: one row per text of every flow file (`flow`,
//! `text`, then a column per locale), exported from and imported into the files, so
//! translated texts go through review and `apply` like any other change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use super::files::{self, FlowFile};
use crate::domain::validation::flow_texts;
use crate::domain::{Limits, LocalizedText, text, validate_flow};

/// The largest CSV file imported.
pub const MAX_CSV_BYTES: u64 = 16 * 1024 * 1024;

/// Where a text is, as the CSV names it: `title`, `description`, `steps.<key>.title`,
/// `steps.<key>.description`.
fn text_name(json_path: &str, flow: &crate::domain::FlowDefinition) -> String {
    // `$.steps[3].title` -> `steps.<key of step 3>.title`, and
    // `$.nudges.rules[1].message` -> `nudges.<key of rule 1>.message`: keys, not positions,
    // so a translation stays with its text when steps or rules are reordered.
    if let Some(rest) = json_path.strip_prefix("$.steps[") {
        let (index, field) = rest.split_once("].").unwrap_or((rest, ""));
        let key = index.parse::<usize>().ok().and_then(|i| flow.steps.get(i)).map_or("?", |s| s.key.as_str());
        return format!("steps.{key}.{field}");
    }
    if let Some(rest) = json_path.strip_prefix("$.nudges.rules[") {
        let (index, field) = rest.split_once("].").unwrap_or((rest, ""));
        let rules = &flow.nudges.rules;
        let key = index.parse::<usize>().ok().and_then(|i| rules.get(i)).map_or("?", |r| r.key.as_str());
        return format!("nudges.{key}.{field}");
    }
    json_path.trim_start_matches("$.").to_string()
}

/// The CSV of every text in the directory: a column per locale any flow uses, plus
/// `extra_locales` (empty columns to fill for a new language). The flows' default
/// locales come first.
pub fn export(dir: &Path, extra_locales: &[String]) -> anyhow::Result<String> {
    let directory = files::load(dir, &Limits::default())?;
    super::refuse_problems(&directory.problems)?;
    for l in extra_locales {
        anyhow::ensure!(text::is_valid_locale(l), "`{l}` is not a locale tag such as `fr` or `fr-CA`");
    }
    let mut defaults: BTreeSet<String> = BTreeSet::new();
    let mut others: BTreeSet<String> = extra_locales.iter().cloned().collect();
    for f in &directory.flows {
        defaults.insert(f.definition.default_locale().to_string());
        for (_, t) in flow_texts(&f.definition) {
            others.extend(t.locales().map(String::from));
        }
    }
    let mut columns: Vec<String> = defaults.iter().cloned().collect();
    for l in others {
        if !columns.iter().any(|c| c.eq_ignore_ascii_case(&l)) {
            columns.push(l);
        }
    }
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["flow".to_string(), "text".to_string()];
    header.extend(columns.iter().cloned());
    csv.write_record(&header)?;
    for f in &directory.flows {
        let d = &f.definition;
        for (path, t) in flow_texts(d) {
            let mut row = vec![d.key.clone(), text_name(&path, d)];
            row.extend(columns.iter().map(|l| t.text_in(l, d.default_locale()).unwrap_or("").to_string()));
            csv.write_record(&row)?;
        }
    }
    let bytes = csv.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?;
    Ok(String::from_utf8(bytes)?)
}

/// What an import changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Texts set to a new value.
    pub texts: usize,
    /// Files rewritten.
    pub files: Vec<PathBuf>,
}

/// Sets every non-empty cell of the CSV in the flow files (an empty cell changes
/// nothing). All or nothing: an unknown flow or text, or a flow the result would make
/// invalid (a locale left incomplete, say), writes no file. Changed files are rewritten
/// in canonical form (keys sorted, two-space indentation).
pub fn import(dir: &Path, csv_path: &Path) -> anyhow::Result<Imported> {
    let directory = files::load(dir, &Limits::default())?;
    super::refuse_problems(&directory.problems)?;
    let size = std::fs::metadata(csv_path).with_context(|| format!("reading {}", csv_path.display()))?.len();
    anyhow::ensure!(size <= MAX_CSV_BYTES, "{} is over {MAX_CSV_BYTES} bytes", csv_path.display());
    let mut reader = csv::Reader::from_path(csv_path).with_context(|| format!("reading {}", csv_path.display()))?;
    let header = reader.headers()?.clone();
    anyhow::ensure!(
        header.get(0) == Some("flow") && header.get(1) == Some("text"),
        "the first two columns are `flow` and `text`"
    );
    let locales: Vec<String> = header.iter().skip(2).map(String::from).collect();
    for l in &locales {
        anyhow::ensure!(text::is_valid_locale(l), "column `{l}` is not a locale tag such as `fr` or `fr-CA`");
    }
    let by_key = directory.by_key();
    let mut edited: BTreeMap<String, (&FlowFile, Value)> = BTreeMap::new();
    let mut imported = Imported::default();
    for (line, record) in reader.records().enumerate() {
        let row = line + 2;
        let record = record.with_context(|| format!("{} row {row}", csv_path.display()))?;
        let flow_key = record.get(0).unwrap_or_default();
        let name = record.get(1).unwrap_or_default();
        let file = by_key.get(flow_key).with_context(|| format!("row {row}: no flow file defines `{flow_key}`"))?;
        let (_, raw) = edited.entry(flow_key.to_string()).or_insert_with(|| (file, file.raw.clone()));
        let default = raw.get("defaultLocale").and_then(Value::as_str).unwrap_or(text::FALLBACK_LOCALE).to_string();
        let (obj, field) = locate(raw, &file.definition, name)
            .with_context(|| format!("row {row}: flow `{flow_key}` has no text `{name}`"))?;
        for (locale, cell) in locales.iter().zip(record.iter().skip(2)) {
            if cell.is_empty() {
                continue;
            }
            let current = obj.get(field).and_then(parse_text);
            if current.as_ref().and_then(|c| c.text_in(locale, &default)) == Some(cell) {
                continue;
            }
            let is_default = locale.eq_ignore_ascii_case(&default);
            let updated = match &current {
                Some(LocalizedText::Plain(_)) | None if is_default => LocalizedText::plain(cell),
                Some(c) => c.with(locale, cell, &default),
                None => anyhow::bail!(
                    "row {row}: `{name}` of flow `{flow_key}` has no text in the default locale `{default}` to translate"
                ),
            };
            obj.insert(field.to_string(), updated.to_json());
            imported.texts += 1;
        }
        // A flow that gains translations declares the locale its plain texts were in.
        if raw.get("defaultLocale").is_none()
            && let Some(obj) = raw.as_object_mut()
            && flow_uses_maps(obj)
        {
            obj.insert("defaultLocale".into(), Value::String(default));
        }
    }
    let mut writes = Vec::new();
    let mut problems = Vec::new();
    for (file, raw) in edited.values() {
        if *raw == file.raw {
            continue;
        }
        match validate_flow(raw, &Limits::default()) {
            Ok(_) => writes.push((file.file.clone(), files::canonical_text(raw))),
            Err(ps) => problems.extend(ps.into_iter().map(|p| format!("{}: {p}", file.file.display()))),
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the import would leave invalid flows; nothing written:\n{}",
        problems.join("\n")
    );
    for (path, text) in writes {
        files::write_atomically(&path, &text)?;
        imported.files.push(path);
    }
    Ok(imported)
}

fn parse_text(value: &Value) -> Option<LocalizedText> {
    match value {
        Value::String(s) => Some(LocalizedText::plain(s.clone())),
        Value::Object(m) => Some(LocalizedText::Localized(
            m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect(),
        )),
        _ => None,
    }
}

fn flow_uses_maps(obj: &serde_json::Map<String, Value>) -> bool {
    let is_map = |v: Option<&Value>| v.is_some_and(Value::is_object);
    let rules = obj.get("nudges").and_then(|n| n.get("rules")).and_then(Value::as_array);
    is_map(obj.get("title"))
        || is_map(obj.get("description"))
        || obj
            .get("steps")
            .and_then(Value::as_array)
            .is_some_and(|steps| steps.iter().any(|s| is_map(s.get("title")) || is_map(s.get("description"))))
        || rules.is_some_and(|rules| rules.iter().any(|r| is_map(r.get("title")) || is_map(r.get("message"))))
}

/// The object holding a text named as in the CSV, in the file as written, and the
/// text's field.
fn locate<'a, 'n>(
    raw: &'a mut Value,
    flow: &crate::domain::FlowDefinition,
    name: &'n str,
) -> Option<(&'a mut serde_json::Map<String, Value>, &'n str)> {
    let (container, field) = match name.split('.').collect::<Vec<_>>().as_slice() {
        [field @ ("title" | "description")] => (raw, *field),
        ["steps", key, field @ ("title" | "description")] => {
            let index = flow.steps.iter().position(|s| s.key == *key)?;
            (raw.get_mut("steps")?.get_mut(index)?, *field)
        }
        ["nudges", key, field @ ("title" | "message")] => {
            let index = flow.nudges.rules.iter().position(|r| r.key == *key)?;
            (raw.get_mut("nudges")?.get_mut("rules")?.get_mut(index)?, *field)
        }
        _ => return None,
    };
    Some((container.as_object_mut()?, field))
}
