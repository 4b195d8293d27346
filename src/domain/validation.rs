//! Publishing validates a whole flow definition and reports every problem at once, each
//! with a JSON path and a stable code, so an author fixes everything in one round.
//!
//! Stages, in order: shape (types, required fields, unknown fields), keys (syntax,
//! duplicates), references (dependsOn and answer paths point at known, earlier steps),
//! the dependency graph (cycles). Conditions are parsed inside the shape stage with the
//! step keys already known, so their references are checked where they are written.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::condition::{Condition, Op, Path};
use super::flow::{FlowDefinition, FlowScope, StepDefinition, Trigger};
use super::limits::{JsonRefusalKind, Limits, shorten};
use super::progress::StepStatus;
use super::text::{self, LocalizedText};

/// One thing wrong with a definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where, as a JSON path: `$.steps[2].dependsOn[0]`.
    pub path: String,
    /// A stable, machine-readable code such as `DEPENDENCY_CYCLE`.
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.path, self.code, self.message)
    }
}

/// The stable problem codes, documented in the README.
pub mod codes {
    pub const INVALID_DEFINITION: &str = "INVALID_DEFINITION";
    pub const MISSING_FIELD: &str = "MISSING_FIELD";
    pub const WRONG_TYPE: &str = "WRONG_TYPE";
    pub const UNKNOWN_FIELD: &str = "UNKNOWN_FIELD";
    pub const EMPTY_FLOW: &str = "EMPTY_FLOW";
    pub const INVALID_KEY: &str = "INVALID_KEY";
    pub const DUPLICATE_STEP_KEY: &str = "DUPLICATE_STEP_KEY";
    pub const UNKNOWN_DEPENDENCY: &str = "UNKNOWN_DEPENDENCY";
    pub const FORWARD_DEPENDENCY: &str = "FORWARD_DEPENDENCY";
    pub const DEPENDENCY_CYCLE: &str = "DEPENDENCY_CYCLE";
    pub const INVALID_CONDITION: &str = "INVALID_CONDITION";
    pub const UNKNOWN_OPERATOR: &str = "UNKNOWN_OPERATOR";
    pub const WRONG_VALUE_TYPE: &str = "WRONG_VALUE_TYPE";
    pub const INVALID_PATH: &str = "INVALID_PATH";
    pub const UNKNOWN_ANSWER_REFERENCE: &str = "UNKNOWN_ANSWER_REFERENCE";
    pub const INVALID_TRIGGER: &str = "INVALID_TRIGGER";
    pub const NEGATIVE_POINTS: &str = "NEGATIVE_POINTS";
    pub const REQUIRED_STEP_SKIPPABLE: &str = "REQUIRED_STEP_SKIPPABLE";
    /// A new version cannot change the scope of earlier ones: enrollments of one flow key
    /// belong either to users or to workspaces (checked when publishing).
    pub const SCOPE_CHANGED: &str = "SCOPE_CHANGED";
    /// The definition is larger than `definition_bytes` as JSON.
    pub const DEFINITION_TOO_LARGE: &str = "DEFINITION_TOO_LARGE";
    /// The definition is nested deeper than `json_depth`.
    pub const DEFINITION_TOO_DEEP: &str = "DEFINITION_TOO_DEEP";
    /// More steps than `steps_per_flow`.
    pub const TOO_MANY_STEPS: &str = "TOO_MANY_STEPS";
    /// A step lists more dependencies than `depends_on_per_step`.
    pub const TOO_MANY_DEPENDENCIES: &str = "TOO_MANY_DEPENDENCIES";
    /// A condition has more nodes than `condition_nodes`.
    pub const CONDITION_TOO_LARGE: &str = "CONDITION_TOO_LARGE";
    /// A condition is nested deeper than `condition_depth`.
    pub const CONDITION_TOO_DEEP: &str = "CONDITION_TOO_DEEP";
    /// A step awards more than `points_per_step`.
    pub const TOO_MANY_POINTS: &str = "TOO_MANY_POINTS";
    /// A locale tag that is not in the shape of BCP 47, or written twice in one text.
    pub const INVALID_LOCALE: &str = "INVALID_LOCALE";
    /// A text has more than `text::MAX_LOCALES` locales.
    pub const TOO_MANY_LOCALES: &str = "TOO_MANY_LOCALES";
    /// A locale lacks a text the default locale has (or a map lacks the default locale).
    pub const MISSING_TRANSLATION: &str = "MISSING_TRANSLATION";
}
use codes::*;

const MAX_KEY_LEN: usize = 64;

/// Keys are what clients and conditions refer to (`steps.<key>.status`), so they are
/// plain identifiers: a letter, then letters, digits, `_` or `-`.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_KEY_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), code, message: message.into() });
    }
}

/// Reads a definition back (from storage): every rule, but no product limit, so a flow
/// published under higher limits stays readable after they are lowered. Input coming in
/// goes through `validate_flow` instead.
pub fn parse_flow(raw: &Value) -> Result<FlowDefinition, Vec<Problem>> {
    parse(raw, &Limits::unbounded())
}

/// Validates a definition as it comes in (publish, validate): the product limits (size
/// and depth of the JSON first, before anything walks it), then every rule. Either a
/// valid flow or every problem found. Near-linear in the size of the definition.
pub fn validate_flow(raw: &Value, limits: &Limits) -> Result<FlowDefinition, Vec<Problem>> {
    if let Err(refusal) = limits.check_definition(raw) {
        let code = match refusal.kind {
            JsonRefusalKind::TooDeep => DEFINITION_TOO_DEEP,
            JsonRefusalKind::TooLarge => DEFINITION_TOO_LARGE,
            JsonRefusalKind::Nul => INVALID_DEFINITION,
        };
        return Err(vec![Problem { path: "$".into(), code, message: refusal.message }]);
    }
    parse(raw, limits)
}

fn parse(raw: &Value, limits: &Limits) -> Result<FlowDefinition, Vec<Problem>> {
    let mut problems = Problems::default();
    let Some(obj) = raw.as_object() else {
        problems.add("$", INVALID_DEFINITION, "a flow definition is a JSON object");
        return Err(problems.0);
    };
    unknown_fields(
        obj,
        "$",
        &["key", "title", "description", "defaultLocale", "scope", "audience", "steps", "nudges"],
        &mut problems,
    );

    let key = required_string(obj, "$", "key", &mut problems);
    if let Some(k) = &key
        && !is_valid_key(k)
    {
        problems.add("$.key", INVALID_KEY, key_message(k));
    }
    let title = required_text(obj, "$", "title", &mut problems);
    let description = optional_text(obj, "$", "description", &mut problems);
    let default_locale = match obj.get("defaultLocale") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if text::is_valid_locale(l) => Some(l.clone()),
        Some(Value::String(l)) => {
            problems.add("$.defaultLocale", INVALID_LOCALE, locale_message(l));
            None
        }
        Some(_) => {
            problems.add("$.defaultLocale", WRONG_TYPE, "`defaultLocale` is a locale tag such as `en` or `fr-CA`");
            None
        }
    };
    let audience = match obj.get("audience") {
        None | Some(Value::Null) => None,
        Some(c) => condition_within(c, "$.audience", &AnswerScope::Audience, limits, &mut problems),
    };
    let scope = match obj.get("scope") {
        None | Some(Value::Null) => FlowScope::User,
        Some(Value::String(s)) => match FlowScope::parse(s) {
            Some(scope) => scope,
            None => {
                problems.add("$.scope", WRONG_TYPE, format!("scope is USER or WORKSPACE, not `{}`", shorten(s)));
                FlowScope::User
            }
        },
        Some(_) => {
            problems.add("$.scope", WRONG_TYPE, "scope is a string: USER or WORKSPACE");
            FlowScope::User
        }
    };

    let raw_steps: &[Value] = match obj.get("steps") {
        None => {
            problems.add("$.steps", MISSING_FIELD, "a flow needs a `steps` array");
            &[]
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                problems.add("$.steps", EMPTY_FLOW, "a flow needs at least one step");
            }
            if items.len() > limits.steps_per_flow {
                // Nothing more is looked at: the cost of validation stays bounded.
                problems.add(
                    "$.steps",
                    TOO_MANY_STEPS,
                    format!("a flow has at most {} steps, not {}", limits.steps_per_flow, items.len()),
                );
                return Err(problems.0);
            }
            items
        }
        Some(_) => {
            problems.add("$.steps", WRONG_TYPE, "`steps` is an array of step objects");
            &[]
        }
    };

    // Stage 2: keys. Positions are by first occurrence, so later duplicates are reported.
    let mut position: HashMap<String, usize> = HashMap::new();
    for (i, step) in raw_steps.iter().enumerate() {
        if let Some(Value::String(k)) = step.get("key") {
            if !is_valid_key(k) {
                problems.add(format!("$.steps[{i}].key"), INVALID_KEY, key_message(k));
            }
            if let Some(first) = position.get(k) {
                problems.add(
                    format!("$.steps[{i}].key"),
                    DUPLICATE_STEP_KEY,
                    format!("step key `{}` is already used by $.steps[{first}]", shorten(k)),
                );
            } else {
                position.insert(k.clone(), i);
            }
        }
    }

    let steps: Vec<Option<StepDefinition>> =
        raw_steps.iter().enumerate().map(|(i, raw)| parse_step(raw, i, &position, limits, &mut problems)).collect();

    // Stage 4: cycles, over the dependencies that name known steps, as written. Steps
    // that failed to parse still count: any cycle of two or more steps has a forward
    // edge, whose step has already failed with FORWARD_DEPENDENCY.
    let edges: Vec<Vec<usize>> = raw_steps
        .iter()
        .map(|raw| match raw.get("dependsOn") {
            Some(Value::Array(deps)) => {
                deps.iter().filter_map(|d| d.as_str().and_then(|d| position.get(d)).copied()).collect()
            }
            _ => vec![],
        })
        .collect();
    for cycle in find_cycles(&edges) {
        let names: Vec<std::borrow::Cow<'_, str>> =
            cycle.iter().map(|&i| shorten(raw_steps[i].get("key").and_then(Value::as_str).unwrap_or("?"))).collect();
        problems.add(
            format!("$.steps[{}].dependsOn", cycle[0]),
            DEPENDENCY_CYCLE,
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        );
    }

    let nudges = super::nudges::parse_plan(obj.get("nudges"), &position, limits, &mut problems.0);

    let declared = obj.get("defaultLocale").is_some_and(|l| !l.is_null());
    match (problems.0.is_empty(), key, title) {
        (true, Some(key), Some(title)) => {
            let flow = FlowDefinition {
                key,
                title,
                description,
                default_locale,
                scope,
                audience,
                steps: steps.into_iter().flatten().collect(),
                nudges,
            };
            check_translations(&flow, declared, &mut problems);
            if problems.0.is_empty() { Ok(flow) } else { Err(problems.0) }
        }
        _ => Err(problems.0),
    }
}

/// Every text of a flow with its JSON path, in document order: the flow's, the steps',
/// the nudges'.
pub fn flow_texts(flow: &FlowDefinition) -> Vec<(String, &LocalizedText)> {
    let mut texts = vec![("$.title".to_string(), &flow.title)];
    texts.extend(flow.description.as_ref().map(|d| ("$.description".to_string(), d)));
    for (i, step) in flow.steps.iter().enumerate() {
        texts.push((format!("$.steps[{i}].title"), &step.title));
        texts.extend(step.description.as_ref().map(|d| (format!("$.steps[{i}].description"), d)));
    }
    for (i, rule) in flow.nudges.rules.iter().enumerate() {
        texts.push((format!("$.nudges.rules[{i}].title"), &rule.title));
        texts.push((format!("$.nudges.rules[{i}].message"), &rule.message));
    }
    texts
}

/// A required text of another part of the definition (nudge rules): a non-blank string,
/// or an object of locale tag to non-blank string, checked as the flow's own texts are.
pub(super) fn localized_text(
    obj: &Map<String, Value>,
    at: &str,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Option<LocalizedText> {
    let mut collected = Problems(std::mem::take(problems));
    let text = required_text(obj, at, field, &mut collected);
    *problems = collected.0;
    text
}

/// A flow written in several locales declares its default, every map has it, and every
/// locale has every text the default has: a half-translated flow would show a mix of
/// languages, so it is refused where it is written instead of discovered by a user.
fn check_translations(flow: &FlowDefinition, declared: bool, problems: &mut Problems) {
    let texts = flow_texts(flow);
    if !texts.iter().any(|(_, t)| matches!(t, LocalizedText::Localized(_))) {
        return;
    }
    if !declared {
        problems.add(
            "$.defaultLocale",
            MISSING_FIELD,
            "a flow with texts in several locales declares its `defaultLocale`",
        );
        return;
    }
    let default = flow.default_locale();
    for (path, text) in &texts {
        if let LocalizedText::Localized(_) = text
            && text.get(default).is_none()
        {
            problems.add(path, MISSING_TRANSLATION, format!("no text for the default locale `{default}`"));
        }
    }
    let only: Vec<&LocalizedText> = texts.iter().map(|(_, t)| *t).collect();
    for (i, locale) in text::missing_translations(&only, default) {
        problems.add(
            &texts[i].0,
            MISSING_TRANSLATION,
            format!("no `{locale}` text: the default locale `{default}` has one, and the flow is translated to `{locale}` elsewhere"),
        );
    }
}

fn locale_message(tag: &str) -> String {
    format!(
        "`{}` is not a locale tag: a language of 2 to 8 letters, then subtags of 1 to 8 letters or digits, joined by `-` (`en`, `fr-CA`)",
        shorten(tag)
    )
}

fn required_text(obj: &Map<String, Value>, at: &str, field: &str, problems: &mut Problems) -> Option<LocalizedText> {
    match obj.get(field) {
        Some(Value::Object(_)) => optional_text(obj, at, field, problems),
        _ => required_string(obj, at, field, problems).map(LocalizedText::Plain),
    }
}

/// A string, or an object of locale tag to non-blank string.
fn optional_text(obj: &Map<String, Value>, at: &str, field: &str, problems: &mut Problems) -> Option<LocalizedText> {
    let Some(Value::Object(map)) = obj.get(field) else {
        return optional_string(obj, at, field, problems).map(LocalizedText::Plain);
    };
    let at = format!("{at}.{field}");
    if map.is_empty() {
        problems.add(at, MISSING_FIELD, format!("`{field}` needs a text for at least the default locale"));
        return None;
    }
    if map.len() > text::MAX_LOCALES {
        problems.add(at, TOO_MANY_LOCALES, format!("a text has at most {} locales", text::MAX_LOCALES));
        return None;
    }
    let before = problems.0.len();
    let mut texts = std::collections::BTreeMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (tag, value) in map {
        let tag_at = format!("{at}.{}", shorten(tag));
        if !text::is_valid_locale(tag) {
            problems.add(&tag_at, INVALID_LOCALE, locale_message(tag));
        } else if !seen.insert(tag.to_ascii_lowercase()) {
            problems.add(&tag_at, INVALID_LOCALE, format!("`{}` is written twice (tags ignore case)", shorten(tag)));
        }
        match value {
            Value::String(s) if !s.trim().is_empty() => {
                texts.insert(tag.clone(), s.clone());
            }
            Value::String(_) => problems.add(tag_at, MISSING_FIELD, "a translation cannot be blank"),
            _ => problems.add(tag_at, WRONG_TYPE, "a translation is a string"),
        }
    }
    (problems.0.len() == before).then_some(LocalizedText::Localized(texts))
}

fn key_message(key: &str) -> String {
    format!(
        "`{}` is not a valid key: start with a letter, then letters, digits, `_` or `-`, at most {MAX_KEY_LEN} characters",
        shorten(key)
    )
}

fn parse_step(
    raw: &Value,
    index: usize,
    position: &HashMap<String, usize>,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<StepDefinition> {
    let at = format!("$.steps[{index}]");
    let Some(obj) = raw.as_object() else {
        problems.add(at, WRONG_TYPE, "a step is a JSON object");
        return None;
    };
    let before = problems.0.len();
    unknown_fields(
        obj,
        &at,
        &["key", "title", "description", "required", "skippable", "condition", "dependsOn", "trigger", "points"],
        problems,
    );
    let key = required_string(obj, &at, "key", problems);
    let title = required_text(obj, &at, "title", problems);
    let description = optional_text(obj, &at, "description", problems);
    let required = optional_bool(obj, &at, "required", problems).unwrap_or(true);
    let skippable = optional_bool(obj, &at, "skippable", problems).unwrap_or(!required);
    if required && skippable {
        problems.add(
            format!("{at}.skippable"),
            REQUIRED_STEP_SKIPPABLE,
            "a required step cannot be skippable: a skipped required step would keep the flow from ever completing; make it `required: false`",
        );
    }
    let points = match obj.get("points") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(p) if p < 0 => {
                problems.add(format!("{at}.points"), NEGATIVE_POINTS, "points cannot be negative");
                0
            }
            Some(p) if p > limits.points_per_step => {
                problems.add(
                    format!("{at}.points"),
                    TOO_MANY_POINTS,
                    format!("a step awards at most {} points", limits.points_per_step),
                );
                0
            }
            Some(p) => p,
            None => {
                problems.add(format!("{at}.points"), WRONG_TYPE, "points is a whole number");
                0
            }
        },
    };

    // What this step's condition may read and depend on: steps before it (by position,
    // not by a set built per step, which made validation quadratic).
    let scope = AnswerScope::Steps { all: position, index, this: key.as_deref() };

    let condition = match obj.get("condition") {
        None | Some(Value::Null) => None,
        Some(c) => condition_within(c, &format!("{at}.condition"), &scope, limits, problems),
    };

    let mut depends_on = Vec::new();
    let mut listed: HashSet<&str> = HashSet::new();
    match obj.get("dependsOn") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.len() > limits.depends_on_per_step => problems.add(
            format!("{at}.dependsOn"),
            TOO_MANY_DEPENDENCIES,
            format!("a step depends on at most {} steps, not {}", limits.depends_on_per_step, items.len()),
        ),
        Some(Value::Array(items)) => {
            for (j, dep) in items.iter().enumerate() {
                let dep_at = format!("{at}.dependsOn[{j}]");
                let Some(dep) = dep.as_str() else {
                    problems.add(dep_at, WRONG_TYPE, "dependsOn lists step keys (strings)");
                    continue;
                };
                match position.get(dep) {
                    None => {
                        problems.add(dep_at, UNKNOWN_DEPENDENCY, format!("no step has the key `{}`", shorten(dep)))
                    }
                    Some(&p) if p > index => problems.add(
                        dep_at,
                        FORWARD_DEPENDENCY,
                        format!(
                            "`{}` is shown after this step (at $.steps[{p}]): a step can only depend on steps before it",
                            shorten(dep)
                        ),
                    ),
                    // Self-dependency is a cycle of one; the cycle stage reports it.
                    Some(_) => {}
                }
                if listed.insert(dep) {
                    depends_on.push(dep.to_string());
                }
            }
        }
        Some(_) => problems.add(format!("{at}.dependsOn"), WRONG_TYPE, "dependsOn is an array of step keys"),
    }

    let trigger = match obj.get("trigger") {
        None | Some(Value::Null) => None,
        Some(t) => parse_trigger(t, &format!("{at}.trigger"), limits, problems),
    };

    if problems.0.len() > before {
        return None;
    }
    Some(StepDefinition {
        key: key?,
        title: title?,
        description,
        required,
        skippable,
        condition,
        depends_on,
        trigger,
        points,
    })
}

fn parse_trigger(raw: &Value, at: &str, limits: &Limits, problems: &mut Problems) -> Option<Trigger> {
    let Some(obj) = raw.as_object() else {
        problems.add(at, INVALID_TRIGGER, "a trigger is an object: {\"event\": NAME, \"where\": CONDITION}");
        return None;
    };
    unknown_fields(obj, at, &["event", "where"], problems);
    let event = match obj.get("event") {
        Some(Value::String(e)) if !e.trim().is_empty() && e.len() <= 255 => Some(e.clone()),
        Some(Value::String(_)) => {
            problems.add(format!("{at}.event"), INVALID_TRIGGER, "the event name must be 1 to 255 characters");
            None
        }
        Some(_) => {
            problems.add(format!("{at}.event"), WRONG_TYPE, "the event name is a string");
            None
        }
        None => {
            problems.add(format!("{at}.event"), MISSING_FIELD, "a trigger names the event that completes the step");
            None
        }
    };
    let when = match obj.get("where") {
        None | Some(Value::Null) => None,
        Some(c) => condition_within(c, &format!("{at}.where"), &AnswerScope::EventProperties, limits, problems),
    };
    Some(Trigger { event: event?, when })
}

/// A nudge rule's condition (`domain::nudges`): subject attributes and the answers of
/// any step of the flow, within the same limits as a step's condition.
pub(super) fn nudge_condition(
    raw: &Value,
    at: &str,
    steps: &HashMap<String, usize>,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<Condition> {
    let mut collected = Problems(std::mem::take(problems));
    let scope = AnswerScope::Steps { all: steps, index: usize::MAX, this: None };
    let condition = condition_within(raw, at, &scope, limits, &mut collected);
    *problems = collected.0;
    condition
}

/// What answer paths (`steps.<key>...`) a condition may use where it is written.
enum AnswerScope<'a> {
    /// In a step's condition (the step at `index`): answers of steps shown before it.
    Steps { all: &'a HashMap<String, usize>, index: usize, this: Option<&'a str> },
    /// In a trigger's `where`: paths read the event's properties; there are no answers.
    EventProperties,
    /// In a flow's audience: subject attributes only; no step has been answered yet.
    Audience,
}

/// How deep `parse_condition` recurses whatever the limits: deeper than serde_json reads
/// back, so no stored condition is refused, and shallow enough for any thread's stack.
const CONDITION_RECURSION_GUARD: usize = 128;

/// A condition within the limits on its nodes and depth (measured on the JSON without
/// recursion, before it is parsed), parsed.
fn condition_within(
    raw: &Value,
    at: &str,
    scope: &AnswerScope<'_>,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<Condition> {
    let (nodes, depth) = measure_condition(raw, limits.condition_nodes, limits.condition_depth);
    if depth > limits.condition_depth {
        problems.add(
            at,
            CONDITION_TOO_DEEP,
            format!("a condition is nested at most {} levels deep", limits.condition_depth),
        );
        return None;
    }
    if nodes > limits.condition_nodes {
        problems.add(
            at,
            CONDITION_TOO_LARGE,
            format!("a condition has at most {} operators and comparisons", limits.condition_nodes),
        );
        return None;
    }
    parse_condition(raw, at, scope, 1, problems)
}

/// The nodes (all, any, not and each comparison) and the depth (a lone comparison is 1)
/// of a condition as written, without recursion. Stops counting once past either maximum.
fn measure_condition(raw: &Value, max_nodes: usize, max_depth: usize) -> (usize, usize) {
    let (mut nodes, mut deepest) = (0usize, 0usize);
    let mut stack: Vec<(&Value, usize)> = vec![(raw, 1)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if nodes > max_nodes || deepest > max_depth {
            break;
        }
        nodes += 1;
        let Some(obj) = value.as_object() else { continue };
        match (obj.get("all").or_else(|| obj.get("any")), obj.get("not")) {
            (Some(Value::Array(items)), _) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            (_, Some(inner)) => stack.push((inner, depth + 1)),
            // The shorthand {a: 1, b: 2} is `all` over one comparison per key.
            _ if !obj.contains_key("attr") && !obj.contains_key("op") && obj.len() > 1 => {
                nodes += obj.len();
                deepest = deepest.max(depth + 1);
            }
            _ => {}
        }
    }
    (nodes, deepest)
}

fn parse_condition(
    raw: &Value,
    at: &str,
    scope: &AnswerScope<'_>,
    depth: usize,
    problems: &mut Problems,
) -> Option<Condition> {
    if depth > CONDITION_RECURSION_GUARD {
        problems.add(
            at,
            CONDITION_TOO_DEEP,
            format!("a condition is nested at most {CONDITION_RECURSION_GUARD} levels deep"),
        );
        return None;
    }
    let Some(obj) = raw.as_object() else {
        problems.add(at, INVALID_CONDITION, "a condition is a JSON object");
        return None;
    };
    if obj.is_empty() {
        problems.add(at, INVALID_CONDITION, "a condition cannot be empty");
        return None;
    }
    for combinator in ["all", "any"] {
        if let Some(items) = obj.get(combinator) {
            only_key(obj, at, combinator, problems);
            let Some(items) = items.as_array() else {
                problems.add(
                    format!("{at}.{combinator}"),
                    INVALID_CONDITION,
                    format!("`{combinator}` takes an array of conditions"),
                );
                return None;
            };
            let parsed: Vec<Option<Condition>> = items
                .iter()
                .enumerate()
                .map(|(i, c)| parse_condition(c, &format!("{at}.{combinator}[{i}]"), scope, depth + 1, problems))
                .collect();
            let parsed: Option<Vec<Condition>> = parsed.into_iter().collect();
            return parsed.map(|p| if combinator == "all" { Condition::All(p) } else { Condition::Any(p) });
        }
    }
    if let Some(inner) = obj.get("not") {
        only_key(obj, at, "not", problems);
        return parse_condition(inner, &format!("{at}.not"), scope, depth + 1, problems)
            .map(|c| Condition::Not(Box::new(c)));
    }
    if obj.contains_key("attr") || obj.contains_key("op") {
        return parse_comparison(obj, at, scope, problems);
    }
    // The shorthand: every listed attribute equals its value.
    let mut items = Vec::new();
    for (name, value) in obj {
        let item_at = format!("{at}.{name}");
        let path = parse_path(name, &item_at, scope, problems);
        if value.is_null() {
            problems.add(
                &item_at,
                WRONG_VALUE_TYPE,
                "to test for a missing value use {\"attr\", \"op\": \"exists\", \"value\": false}",
            );
            continue;
        }
        if value.is_array() || value.is_object() {
            problems.add(
                &item_at,
                WRONG_VALUE_TYPE,
                "the shorthand compares with a single value; use {\"attr\", \"op\": \"in\", \"value\": [...]} for a list",
            );
            continue;
        }
        if let Some(path) = path
            && check_status_values(&path, Op::Eq, value, &item_at, problems)
        {
            items.push(Condition::Compare { path, op: Op::Eq, value: value.clone() });
        }
    }
    if items.len() == obj.len() {
        Some(if items.len() == 1 { items.remove(0) } else { Condition::All(items) })
    } else {
        None
    }
}

fn parse_comparison(
    obj: &Map<String, Value>,
    at: &str,
    scope: &AnswerScope<'_>,
    problems: &mut Problems,
) -> Option<Condition> {
    unknown_fields(obj, at, &["attr", "op", "value"], problems);
    let path = match obj.get("attr") {
        Some(Value::String(p)) => parse_path(p, &format!("{at}.attr"), scope, problems),
        Some(_) => {
            problems.add(format!("{at}.attr"), WRONG_TYPE, "`attr` is a path string such as `company.size`");
            None
        }
        None => {
            problems.add(format!("{at}.attr"), MISSING_FIELD, "a comparison names the `attr` it reads");
            None
        }
    };
    let op = match obj.get("op") {
        Some(Value::String(name)) => match Op::parse(name) {
            Some(op) => Some(op),
            None => {
                let valid = Op::ALL.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ");
                problems.add(
                    format!("{at}.op"),
                    UNKNOWN_OPERATOR,
                    format!("unknown operator `{}`; use one of {valid}", shorten(name)),
                );
                None
            }
        },
        Some(_) => {
            problems.add(format!("{at}.op"), WRONG_TYPE, "`op` is a string");
            None
        }
        None => {
            problems.add(format!("{at}.op"), MISSING_FIELD, "a comparison needs an `op`");
            None
        }
    };
    let op = op?;
    let value_at = format!("{at}.value");
    let value = obj.get("value");
    let value = match (op, value) {
        (Op::Exists, None) => Value::Bool(true),
        (Op::Exists, Some(v @ Value::Bool(_))) => v.clone(),
        (Op::Exists, Some(_)) => return wrong_value(problems, &value_at, "`exists` takes true or false"),
        (_, None) => return wrong_value(problems, &value_at, format!("`{}` needs a `value`", op.name())),
        (Op::In | Op::NotIn, Some(v @ Value::Array(_))) => v.clone(),
        (Op::In | Op::NotIn, Some(_)) => {
            return wrong_value(problems, &value_at, format!("`{}` takes an array of values", op.name()));
        }
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(v @ (Value::Number(_) | Value::String(_)))) => v.clone(),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(_)) => {
            return wrong_value(problems, &value_at, format!("`{}` compares with a number or a string", op.name()));
        }
        (Op::Contains, Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)))) => v.clone(),
        (Op::Contains, Some(_)) => {
            return wrong_value(problems, &value_at, "`contains` looks for a string, number or boolean");
        }
        // A missing value reads as absent, never as null, so `eq null` could never hold.
        (Op::Eq | Op::Ne, Some(Value::Null)) => {
            return wrong_value(problems, &value_at, "to test for a missing value use `exists` with false");
        }
        (Op::Eq | Op::Ne, Some(v)) => v.clone(),
    };
    let path = path?;
    if check_status_values(&path, op, &value, &value_at, problems) {
        Some(Condition::Compare { path, op, value })
    } else {
        None
    }
}

fn wrong_value(problems: &mut Problems, at: &str, message: impl Into<String>) -> Option<Condition> {
    problems.add(at, WRONG_VALUE_TYPE, message);
    None
}

/// A step status compares only with the four status names, so a typo such as
/// "complete" is caught at publish time instead of silently never matching.
fn check_status_values(path: &Path, op: Op, value: &Value, at: &str, problems: &mut Problems) -> bool {
    if !matches!(path, Path::StepStatus(_)) {
        return true;
    }
    let candidates: Vec<&Value> = match (op, value) {
        (Op::Eq | Op::Ne, v) => vec![v],
        (Op::In | Op::NotIn, Value::Array(items)) => items.iter().collect(),
        (Op::Exists, _) => return true,
        _ => {
            problems.add(
                at,
                WRONG_VALUE_TYPE,
                format!("a step status is compared with eq, ne, in or not_in, not `{}`", op.name()),
            );
            return false;
        }
    };
    let bad: Vec<String> = candidates
        .iter()
        .filter(|v| v.as_str().and_then(StepStatus::parse).is_none())
        .take(5)
        .map(|v| shorten(&v.to_string()).into_owned())
        .collect();
    if bad.is_empty() {
        return true;
    }
    problems.add(
        at,
        WRONG_VALUE_TYPE,
        format!("{} is not a step status: use PENDING, IN_PROGRESS, COMPLETED or SKIPPED", bad.join(", ")),
    );
    false
}

fn parse_path(raw: &str, at: &str, scope: &AnswerScope<'_>, problems: &mut Problems) -> Option<Path> {
    if let AnswerScope::EventProperties = scope {
        // In a trigger every path is an event property, `steps` included.
        return if raw.is_empty() || raw.split('.').any(str::is_empty) {
            problems.add(at, INVALID_PATH, format!("`{}` is not a property path", shorten(raw)));
            None
        } else {
            Some(Path::Attribute(raw.split('.').map(String::from).collect()))
        };
    }
    let path = match Path::parse(raw) {
        Ok(p) => p,
        Err(reason) => {
            problems.add(at, INVALID_PATH, reason);
            return None;
        }
    };
    if let (Some(_), AnswerScope::Audience) = (path.step_key(), scope) {
        problems.add(at, UNKNOWN_ANSWER_REFERENCE, "an audience reads subject attributes only, not answers");
        return None;
    }
    if let (Some(step), AnswerScope::Steps { all, index, this }) = (path.step_key(), scope)
        && all.get(step).is_none_or(|p| p >= index)
    {
        let why = if *this == Some(step) {
            "a step's condition cannot read its own answer".to_string()
        } else if let Some(p) = all.get(step) {
            format!(
                "`{}` is shown after this step (at $.steps[{p}]): conditions read earlier answers only",
                shorten(step)
            )
        } else {
            format!("no step has the key `{}`", shorten(step))
        };
        problems.add(at, UNKNOWN_ANSWER_REFERENCE, why);
        return None;
    }
    Some(path)
}

fn only_key(obj: &Map<String, Value>, at: &str, key: &str, problems: &mut Problems) {
    for other in obj.keys().filter(|k| k.as_str() != key) {
        problems.add(
            format!("{at}.{}", shorten(other)),
            INVALID_CONDITION,
            format!("`{key}` cannot be combined with `{}` in one object", shorten(other)),
        );
    }
}

fn unknown_fields(obj: &Map<String, Value>, at: &str, known: &[&str], problems: &mut Problems) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        let key = shorten(key);
        problems.add(
            format!("{at}.{key}"),
            UNKNOWN_FIELD,
            format!("unknown field `{key}`; known fields: {}", known.join(", ")),
        );
    }
}

fn required_string(obj: &Map<String, Value>, at: &str, field: &str, problems: &mut Problems) -> Option<String> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            problems.add(format!("{at}.{field}"), MISSING_FIELD, format!("`{field}` cannot be blank"));
            None
        }
        Some(_) => {
            problems.add(format!("{at}.{field}"), WRONG_TYPE, format!("`{field}` is a string"));
            None
        }
        None => {
            problems.add(format!("{at}.{field}"), MISSING_FIELD, format!("`{field}` is required"));
            None
        }
    }
}

fn optional_string(obj: &Map<String, Value>, at: &str, field: &str, problems: &mut Problems) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.add(format!("{at}.{field}"), WRONG_TYPE, format!("`{field}` is a string"));
            None
        }
    }
}

fn optional_bool(obj: &Map<String, Value>, at: &str, field: &str, problems: &mut Problems) -> Option<bool> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            problems.add(format!("{at}.{field}"), WRONG_TYPE, format!("`{field}` is true or false"));
            None
        }
    }
}

/// Elementary cycles of the dependency graph (`edges[i]`: the indexes step `i` depends
/// on), each once, as step indexes in dependency order starting from the lowest index.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    // Depth-first search from each node; a back edge to the path is a cycle. The set of
    // members deduplicates the same cycle found from different starting points. The
    // search keeps its own stack (a chain of thousands of steps must not overflow the
    // thread's) and each node's place on the path (finding where a cycle starts is then
    // constant time, not a scan of the path).
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
    let mut cycles = Vec::new();
    let mut state = vec![NEW; edges.len()];
    let mut place = vec![0usize; edges.len()];
    let mut path: Vec<usize> = Vec::new();
    // (node, how many of its edges are followed)
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..edges.len() {
        if state[start] != NEW {
            continue;
        }
        state[start] = ON_PATH;
        place[start] = 0;
        path.push(start);
        stack.push((start, 0));
        while let Some(top) = stack.last_mut() {
            let (n, followed) = *top;
            let Some(&m) = edges[n].get(followed) else {
                stack.pop();
                path.pop();
                state[n] = DONE;
                continue;
            };
            top.1 += 1;
            if state[m] == ON_PATH {
                let mut cycle = path[place[m]..].to_vec();
                let mut members = cycle.clone();
                members.sort_unstable();
                if seen.insert(members) {
                    let lowest = cycle.iter().enumerate().min_by_key(|(_, v)| **v).map_or(0, |(i, _)| i);
                    cycle.rotate_left(lowest);
                    cycles.push(cycle);
                }
            } else if state[m] == NEW {
                state[m] = ON_PATH;
                place[m] = path.len();
                path.push(m);
                stack.push((m, 0));
            }
        }
    }
    cycles
}

#[cfg(test)]
pub(crate) fn parse_condition_for_tests(raw: &Value) -> Result<Condition, Vec<Problem>> {
    let mut problems = Problems::default();
    let all: HashMap<String, usize> = [("a".to_string(), 0)].into();
    let scope = AnswerScope::Steps { all: &all, index: 1, this: Some("z") };
    parse_condition(raw, "$", &scope, 1, &mut problems).ok_or(problems.0)
}

#[cfg(test)]
#[path = "validation_tests.rs"]
mod tests;
