//! What changes between two versions of a flow, step by step: the flow's own fields, steps
//! added and removed by key, and for steps in both, each field that differs. Works on the
//! canonical JSON (`FlowDefinition::to_json`), so shorthand and defaults never show up as
//! changes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowDiff {
    /// The flow's own fields (everything but `steps`).
    pub fields: Vec<FieldChange>,
    pub added_steps: Vec<String>,
    pub removed_steps: Vec<String>,
    pub changed_steps: Vec<StepChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    /// Absent: the field was not there.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepChange {
    pub key: String,
    /// Field changes; a step that moved among the steps both versions have shows
    /// `position` (1-based, among those steps).
    pub fields: Vec<FieldChange>,
}

impl FlowDiff {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
            && self.added_steps.is_empty()
            && self.removed_steps.is_empty()
            && self.changed_steps.is_empty()
    }
}

/// The difference from `before` to `after`, both canonical flow definitions.
pub fn diff(before: &Value, after: &Value) -> FlowDiff {
    let empty = Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let fields = field_changes(b, a, &["steps"]);
    let steps_of = |m: &Map<String, Value>| -> Vec<(String, Map<String, Value>)> {
        m.get("steps")
            .and_then(Value::as_array)
            .map(|steps| {
                steps
                    .iter()
                    .filter_map(|s| {
                        let obj = s.as_object()?;
                        Some((obj.get("key")?.as_str()?.to_string(), obj.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old, new) = (steps_of(b), steps_of(a));
    let has = |steps: &[(String, Map<String, Value>)], key: &str| steps.iter().any(|(k, _)| k == key);
    let added_steps = new.iter().filter(|(k, _)| !has(&old, k)).map(|(k, _)| k.clone()).collect();
    let removed_steps = old.iter().filter(|(k, _)| !has(&new, k)).map(|(k, _)| k.clone()).collect();
    // Positions among the steps both have, so an insertion does not move every later step.
    let common_old: Vec<&str> = old.iter().map(|(k, _)| k.as_str()).filter(|k| has(&new, k)).collect();
    let common_new: Vec<&str> = new.iter().map(|(k, _)| k.as_str()).filter(|k| has(&old, k)).collect();
    let mut changed_steps = Vec::new();
    for (key, after_step) in &new {
        let Some((_, before_step)) = old.iter().find(|(k, _)| k == key) else { continue };
        let mut fields = field_changes(before_step, after_step, &[]);
        let was = common_old.iter().position(|k| k == key);
        let is = common_new.iter().position(|k| k == key);
        if was != is {
            fields.insert(
                0,
                FieldChange {
                    field: "position".into(),
                    before: was.map(|p| Value::from(p + 1)),
                    after: is.map(|p| Value::from(p + 1)),
                },
            );
        }
        if !fields.is_empty() {
            changed_steps.push(StepChange { key: key.clone(), fields });
        }
    }
    FlowDiff { fields, added_steps, removed_steps, changed_steps }
}

fn field_changes(before: &Map<String, Value>, after: &Map<String, Value>, skip: &[&str]) -> Vec<FieldChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).filter(|k| !skip.contains(&k.as_str())).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| FieldChange {
            field: name.clone(),
            before: before.get(name).cloned(),
            after: after.get(name).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::parse_flow;

    fn canonical(v: Value) -> Value {
        parse_flow(&v).unwrap().to_json()
    }

    #[test]
    fn the_same_flow_written_differently_has_no_changes() {
        let shorthand = canonical(json!({"key": "f", "title": "F", "steps": [
            {"key": "a", "title": "A", "condition": {"plan": "team"}}]}));
        let long = canonical(json!({"key": "f", "title": "F", "scope": "USER", "steps": [
            {"key": "a", "title": "A", "required": true, "skippable": false, "points": 0, "dependsOn": [],
             "condition": {"attr": "plan", "op": "eq", "value": "team"}}]}));
        assert!(diff(&shorthand, &long).is_empty());
    }

    #[test]
    fn steps_added_removed_changed_and_moved() {
        let before = canonical(json!({"key": "f", "title": "F", "steps": [
            {"key": "a", "title": "A"}, {"key": "b", "title": "B", "points": 5}, {"key": "c", "title": "C"},
            {"key": "gone", "title": "Gone"}]}));
        let after = canonical(json!({"key": "f", "title": "F2", "description": "New", "steps": [
            {"key": "new", "title": "New"}, {"key": "a", "title": "A"}, {"key": "c", "title": "C"},
            {"key": "b", "title": "B", "points": 10}]}));
        let d = diff(&before, &after);
        assert_eq!(d.added_steps, ["new"]);
        assert_eq!(d.removed_steps, ["gone"]);
        let fields: Vec<&str> = d.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["description", "title"]);
        assert_eq!(d.fields[0].before, None);
        assert_eq!(d.fields[1].after, Some(json!("F2")));
        // a keeps its place among the common steps despite the insertion before it.
        let keys: Vec<&str> = d.changed_steps.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["c", "b"]);
        let b = &d.changed_steps[1];
        assert_eq!(
            b.fields[0],
            FieldChange { field: "position".into(), before: Some(json!(2)), after: Some(json!(3)) }
        );
        assert_eq!(b.fields[1], FieldChange { field: "points".into(), before: Some(json!(5)), after: Some(json!(10)) });
    }
}
