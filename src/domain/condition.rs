//! The condition language steps use to decide whether they apply, and triggers use to
//! match events. A condition is parsed once, at publish time, into a `Condition` tree;
//! evaluation is a walk over that tree against `Facts`.
//!
//! Missing values: every comparison with a missing (or null) value is false, except `ne`
//! and `not_in`, which are the negations of `eq` and `in`, and `exists`, which asks.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::progress::StepState;

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare { path: Path, op: Op, value: Value },
}

/// What a condition reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// A subject attribute (or, in a trigger, an event property), dotted: `company.size`.
    Attribute(Vec<String>),
    /// `steps.<key>.status`: the status of an earlier step.
    StepStatus(String),
    /// `steps.<key>.metadata.<field>...`: what the subject answered in an earlier step.
    StepMetadata(String, Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    Contains,
}

impl Op {
    pub const ALL: [Op; 10] =
        [Op::Eq, Op::Ne, Op::In, Op::NotIn, Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::Exists, Op::Contains];

    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Exists => "exists",
            Op::Contains => "contains",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl Path {
    /// Parses a dotted path. Paths under `steps.` are answers; anything else is an attribute.
    /// Returns `Err` with a reason when the path is malformed.
    pub fn parse(raw: &str) -> Result<Path, String> {
        if raw.is_empty() {
            return Err("a path cannot be empty".into());
        }
        let parts: Vec<&str> = raw.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("`{raw}` has an empty segment"));
        }
        if parts[0] != "steps" {
            return Ok(Path::Attribute(parts.iter().map(|p| p.to_string()).collect()));
        }
        match parts.as_slice() {
            ["steps", key, "status"] => Ok(Path::StepStatus(key.to_string())),
            ["steps", key, "metadata", rest @ ..] if !rest.is_empty() => {
                Ok(Path::StepMetadata(key.to_string(), rest.iter().map(|p| p.to_string()).collect()))
            }
            _ => Err(format!(
                "`{raw}` is not an answer path: use `steps.<key>.status` or `steps.<key>.metadata.<field>`"
            )),
        }
    }

    /// The step an answer path refers to.
    pub fn step_key(&self) -> Option<&str> {
        match self {
            Path::Attribute(_) => None,
            Path::StepStatus(key) | Path::StepMetadata(key, _) => Some(key),
        }
    }

    fn render(&self) -> String {
        match self {
            Path::Attribute(parts) => parts.join("."),
            Path::StepStatus(key) => format!("steps.{key}.status"),
            Path::StepMetadata(key, rest) => format!("steps.{key}.metadata.{}", rest.join(".")),
        }
    }
}

/// What conditions are evaluated against: the subject's attributes (or an event's
/// properties) and the answers given in earlier steps.
pub struct Facts<'a> {
    pub attributes: &'a Value,
    pub answers: &'a BTreeMap<String, StepState>,
}

impl Facts<'_> {
    fn lookup(&self, path: &Path) -> Option<Cow<'_, Value>> {
        let found = match path {
            Path::Attribute(parts) => lookup_dotted(self.attributes, parts).map(Cow::Borrowed),
            // A step with no recorded state is PENDING: every step has a status.
            Path::StepStatus(key) => Some(Cow::Owned(Value::String(
                self.answers.get(key).map_or(super::StepStatus::Pending, |s| s.status).name().to_string(),
            ))),
            Path::StepMetadata(key, parts) => self
                .answers
                .get(key)
                .and_then(|s| s.metadata.as_ref())
                .and_then(|m| lookup_dotted(m, parts))
                .map(Cow::Borrowed),
        };
        found.filter(|v| !v.is_null())
    }
}

/// Reads `a.b.c` as nested objects, falling back to a literal dotted key (`{"a.b": 1}`),
/// since both shapes occur in attribute payloads.
fn lookup_dotted<'v>(root: &'v Value, parts: &[String]) -> Option<&'v Value> {
    let mut current = root;
    for part in parts {
        match current.get(part.as_str()) {
            Some(next) => current = next,
            None => return root.get(parts.join(".").as_str()),
        }
    }
    Some(current)
}

impl Condition {
    pub fn evaluate(&self, facts: &Facts<'_>) -> bool {
        match self {
            Condition::All(items) => items.iter().all(|c| c.evaluate(facts)),
            Condition::Any(items) => items.iter().any(|c| c.evaluate(facts)),
            Condition::Not(inner) => !inner.evaluate(facts),
            Condition::Compare { path, op, value } => compare(facts.lookup(path).as_deref(), *op, value),
        }
    }

    /// Every path this condition reads, for validation.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a Path>) {
        match self {
            Condition::All(items) | Condition::Any(items) => items.iter().for_each(|c| c.collect_paths(out)),
            Condition::Not(inner) => inner.collect_paths(out),
            Condition::Compare { path, .. } => out.push(path),
        }
    }

    /// The canonical JSON form, which is what gets stored: shorthands expanded.
    pub fn to_json(&self) -> Value {
        match self {
            Condition::All(items) => json!({ "all": items.iter().map(Condition::to_json).collect::<Vec<_>>() }),
            Condition::Any(items) => json!({ "any": items.iter().map(Condition::to_json).collect::<Vec<_>>() }),
            Condition::Not(inner) => json!({ "not": inner.to_json() }),
            Condition::Compare { path, op, value } => {
                let mut m = Map::new();
                m.insert("attr".into(), Value::String(path.render()));
                m.insert("op".into(), Value::String(op.name().into()));
                m.insert("value".into(), value.clone());
                Value::Object(m)
            }
        }
    }
}

fn compare(actual: Option<&Value>, op: Op, expected: &Value) -> bool {
    match op {
        Op::Exists => actual.is_some() == expected.as_bool().unwrap_or(true),
        Op::Eq => actual.is_some_and(|a| json_eq(a, expected)),
        Op::Ne => !actual.is_some_and(|a| json_eq(a, expected)),
        Op::In => actual.is_some_and(|a| in_list(a, expected)),
        Op::NotIn => !actual.is_some_and(|a| in_list(a, expected)),
        Op::Gt => ordering(actual, expected).is_some_and(|o| o == Ordering::Greater),
        Op::Gte => ordering(actual, expected).is_some_and(|o| o != Ordering::Less),
        Op::Lt => ordering(actual, expected).is_some_and(|o| o == Ordering::Less),
        Op::Lte => ordering(actual, expected).is_some_and(|o| o != Ordering::Greater),
        Op::Contains => match actual {
            Some(Value::String(s)) => expected.as_str().is_some_and(|needle| s.contains(needle)),
            Some(Value::Array(items)) => items.iter().any(|i| json_eq(i, expected)),
            _ => false,
        },
    }
}

/// Equality where 3 and 3.0 are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn in_list(actual: &Value, list: &Value) -> bool {
    list.as_array().is_some_and(|items| items.iter().any(|i| json_eq(actual, i)))
}

/// Numbers order numerically, strings lexically (so ISO-8601 dates order by time);
/// anything else does not order at all.
fn ordering(actual: Option<&Value>, expected: &Value) -> Option<Ordering> {
    match (actual?, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Source, StepStatus};

    fn cmp(path: &str, op: Op, value: Value) -> Condition {
        Condition::Compare { path: Path::parse(path).unwrap(), op, value }
    }

    fn eval(c: &Condition, attributes: Value) -> bool {
        let answers = BTreeMap::new();
        c.evaluate(&Facts { attributes: &attributes, answers: &answers })
    }

    #[test]
    fn paths_parse_attributes_and_answers() {
        assert_eq!(Path::parse("plan"), Ok(Path::Attribute(vec!["plan".into()])));
        assert_eq!(Path::parse("company.size"), Ok(Path::Attribute(vec!["company".into(), "size".into()])));
        assert_eq!(Path::parse("steps.role.status"), Ok(Path::StepStatus("role".into())));
        assert_eq!(
            Path::parse("steps.role.metadata.team.size"),
            Ok(Path::StepMetadata("role".into(), vec!["team".into(), "size".into()]))
        );
        assert!(Path::parse("").is_err());
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("steps.role").is_err());
        assert!(Path::parse("steps.role.metadata").is_err());
        assert!(Path::parse("steps.role.title").is_err());
    }

    #[test]
    fn eq_and_ne_treat_missing_as_unequal() {
        let c = cmp("plan", Op::Eq, json!("team"));
        assert!(eval(&c, json!({"plan": "team"})));
        assert!(!eval(&c, json!({"plan": "solo"})));
        assert!(!eval(&c, json!({})));
        assert!(!eval(&c, json!({"plan": null})));
        let c = cmp("plan", Op::Ne, json!("team"));
        assert!(!eval(&c, json!({"plan": "team"})));
        assert!(eval(&c, json!({"plan": "solo"})));
        assert!(eval(&c, json!({})));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(eval(&cmp("n", Op::Eq, json!(3)), json!({"n": 3.0})));
        assert!(eval(&cmp("n", Op::Gt, json!(10)), json!({"n": 11})));
        assert!(!eval(&cmp("n", Op::Gt, json!(10)), json!({"n": 10})));
        assert!(eval(&cmp("n", Op::Gte, json!(10)), json!({"n": 10})));
        assert!(eval(&cmp("n", Op::Lt, json!(10)), json!({"n": 9.5})));
        assert!(!eval(&cmp("n", Op::Lt, json!(10)), json!({"n": 10})));
        assert!(eval(&cmp("n", Op::Lte, json!(10)), json!({"n": 10})));
        // Ordering never holds across types or on missing values.
        assert!(!eval(&cmp("n", Op::Gt, json!(10)), json!({"n": "11"})));
        assert!(!eval(&cmp("n", Op::Lt, json!(10)), json!({})));
    }

    #[test]
    fn strings_order_lexically() {
        assert!(eval(&cmp("signup", Op::Gte, json!("2026-01-01")), json!({"signup": "2026-03-04"})));
        assert!(!eval(&cmp("signup", Op::Gte, json!("2026-01-01")), json!({"signup": "2025-12-31"})));
    }

    #[test]
    fn in_and_not_in() {
        let c = cmp("role", Op::In, json!(["admin", "owner"]));
        assert!(eval(&c, json!({"role": "owner"})));
        assert!(!eval(&c, json!({"role": "member"})));
        assert!(!eval(&c, json!({})));
        let c = cmp("role", Op::NotIn, json!(["admin", "owner"]));
        assert!(!eval(&c, json!({"role": "owner"})));
        assert!(eval(&c, json!({"role": "member"})));
        assert!(eval(&c, json!({})));
    }

    #[test]
    fn exists_defaults_to_true_and_ignores_null() {
        assert!(eval(&cmp("x", Op::Exists, json!(true)), json!({"x": 0})));
        assert!(!eval(&cmp("x", Op::Exists, json!(true)), json!({"x": null})));
        assert!(eval(&cmp("x", Op::Exists, json!(false)), json!({})));
        assert!(eval(&cmp("x", Op::Exists, Value::Null), json!({"x": false})));
    }

    #[test]
    fn contains_on_strings_and_arrays() {
        let c = cmp("tags", Op::Contains, json!("beta"));
        assert!(eval(&c, json!({"tags": ["alpha", "beta"]})));
        assert!(!eval(&c, json!({"tags": ["alpha"]})));
        assert!(eval(&c, json!({"tags": "closed-beta"})));
        assert!(!eval(&c, json!({"tags": 7})));
        assert!(!eval(&c, json!({})));
    }

    #[test]
    fn nested_and_literal_dotted_attributes() {
        let c = cmp("company.size", Op::Gte, json!(50));
        assert!(eval(&c, json!({"company": {"size": 120}})));
        assert!(eval(&c, json!({"company.size": 120})));
        assert!(!eval(&c, json!({"company": {"size": 10}})));
        assert!(!eval(&c, json!({"company": "acme"})));
    }

    #[test]
    fn boolean_combinators() {
        let team = cmp("plan", Op::Eq, json!("team"));
        let big = cmp("size", Op::Gt, json!(10));
        let all = Condition::All(vec![team.clone(), big.clone()]);
        let any = Condition::Any(vec![team.clone(), big.clone()]);
        let not = Condition::Not(Box::new(team));
        assert!(eval(&all, json!({"plan": "team", "size": 11})));
        assert!(!eval(&all, json!({"plan": "team", "size": 1})));
        assert!(eval(&any, json!({"plan": "solo", "size": 11})));
        assert!(!eval(&any, json!({"plan": "solo", "size": 1})));
        assert!(eval(&not, json!({"plan": "solo"})));
        // Empty lists: all of nothing holds, any of nothing does not.
        assert!(eval(&Condition::All(vec![]), json!({})));
        assert!(!eval(&Condition::Any(vec![]), json!({})));
    }

    #[test]
    fn answers_read_status_and_metadata() {
        let mut answers = BTreeMap::new();
        let mut role = StepState::new(StepStatus::Completed, Source::User);
        role.metadata = Some(json!({"role": "developer", "team": {"size": 4}}));
        answers.insert("role".to_string(), role);
        let attributes = json!({});
        let facts = Facts { attributes: &attributes, answers: &answers };
        assert!(cmp("steps.role.status", Op::Eq, json!("COMPLETED")).evaluate(&facts));
        assert!(cmp("steps.role.metadata.role", Op::Eq, json!("developer")).evaluate(&facts));
        assert!(cmp("steps.role.metadata.team.size", Op::Gt, json!(3)).evaluate(&facts));
        // A step with no state is PENDING and has no metadata.
        assert!(cmp("steps.other.status", Op::Eq, json!("PENDING")).evaluate(&facts));
        assert!(!cmp("steps.other.metadata.role", Op::Exists, json!(true)).evaluate(&facts));
    }

    #[test]
    fn canonical_json_round_trips_through_the_parser() {
        let c = Condition::All(vec![
            cmp("plan", Op::Eq, json!("team")),
            Condition::Not(Box::new(cmp("steps.a.status", Op::In, json!(["SKIPPED"])))),
        ]);
        let parsed = crate::domain::validation::parse_condition_for_tests(&c.to_json()).unwrap();
        assert_eq!(parsed, c);
    }
}
