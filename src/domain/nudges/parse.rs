//! Reading a flow's `nudges` section: every problem with its JSON path, like the rest of
//! the definition (see `validation`).

use std::collections::{HashMap, HashSet};

use chrono::Duration;
use serde_json::{Map, Value};

use super::{
    Channel, MAX_DURATION_SECONDS, MAX_MESSAGE_CHARS, MAX_PRIORITY, MAX_REPEATS, MAX_RULES, MAX_TITLE_CHARS,
    MIN_DURATION_SECONDS, NudgePlan, NudgeRule, NudgeTrigger,
};
use crate::domain::limits::{Limits, shorten};
use crate::domain::text::LocalizedText;
use crate::domain::validation::{Problem, codes as flow_codes, is_valid_key, nudge_condition};

/// The problem codes of nudge rules, beside the flow's own (`validation::codes`).
pub mod codes {
    /// The section or a rule is not shaped as documented.
    pub const INVALID_NUDGE: &str = "INVALID_NUDGE";
    /// More rules than `MAX_RULES`.
    pub const TOO_MANY_NUDGES: &str = "TOO_MANY_NUDGES";
    pub const DUPLICATE_NUDGE_KEY: &str = "DUPLICATE_NUDGE_KEY";
    /// Not an ISO 8601 duration or `<n>m|h|d|w`, or outside one minute to 366 days.
    pub const INVALID_DURATION: &str = "INVALID_DURATION";
    /// A title or message longer than its limit.
    pub const NUDGE_TEXT_TOO_LONG: &str = "NUDGE_TEXT_TOO_LONG";
    /// A `stuck` trigger names no step of the flow.
    pub const UNKNOWN_NUDGE_STEP: &str = "UNKNOWN_NUDGE_STEP";
}
use codes::*;

fn add(problems: &mut Vec<Problem>, path: impl Into<String>, code: &'static str, message: impl Into<String>) {
    problems.push(Problem { path: path.into(), code, message: message.into() });
}

/// Parses a duration: ISO 8601 (`PT24H`, `P7D`, `P1DT12H`, `P2W`, `PT90M`) or the short
/// form `<n>` followed by `m`, `h`, `d` or `w` (`24h`, `7d`). Years and months are refused:
/// their length varies.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad =
        || format!("`{}` is not a duration: use ISO 8601 such as PT24H or P7D, or 30m, 24h, 7d, 2w", shorten(raw));
    let seconds = if let Some(rest) = raw.strip_prefix('P') {
        iso_seconds(rest).ok_or_else(bad)?
    } else {
        let unit = raw.chars().last().ok_or_else(bad)?;
        let number = &raw[..raw.len() - unit.len_utf8()];
        let per = match unit {
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        number_of(number).ok_or_else(bad)?.checked_mul(per).ok_or_else(bad)?
    };
    if !(MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&seconds) {
        return Err(format!("`{}` is outside the allowed range of one minute to 366 days", shorten(raw)));
    }
    Ok(Duration::seconds(seconds))
}

/// Digits only (no sign, no spaces), at most 9 of them.
fn number_of(digits: &str) -> Option<i64> {
    (!digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The seconds of an ISO 8601 duration after its `P`: `[nW]` alone, or `[nD][T[nH][nM][nS]]`.
fn iso_seconds(rest: &str) -> Option<i64> {
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total: i64 = 0;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut number = String::new();
        let mut allowed = units;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let at = allowed.iter().position(|(u, _)| *u == c)?;
            let n = number_of(&number)?;
            total = total.checked_add(n.checked_mul(allowed[at].1)?)?;
            any = true;
            number.clear();
            allowed = &allowed[at + 1..];
        }
        number.is_empty().then_some(())
    };
    take(date, &[('W', 7 * 86_400), ('D', 86_400)])?;
    if let Some(time) = time {
        take(time, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    any.then_some(total)
}

/// The `nudges` section of a flow: `{"priority": 0, "rules": [...]}`. Absent: no nudges.
/// `steps` maps the flow's step keys to their positions.
pub fn parse_plan(
    raw: Option<&Value>,
    steps: &HashMap<String, usize>,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> NudgePlan {
    let at = "$.nudges";
    let obj = match raw {
        None | Some(Value::Null) => return NudgePlan::default(),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            add(problems, at, INVALID_NUDGE, "`nudges` is an object: {\"priority\": 0, \"rules\": [...]}");
            return NudgePlan::default();
        }
    };
    unknown_fields(obj, at, &["priority", "rules"], problems);
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(p) if p.abs() <= MAX_PRIORITY => p as i32,
            _ => {
                add(
                    problems,
                    format!("{at}.priority"),
                    flow_codes::WRONG_TYPE,
                    format!("priority is a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}"),
                );
                0
            }
        },
    };
    let items: &[Value] = match obj.get("rules") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) if items.len() > MAX_RULES => {
            add(
                problems,
                format!("{at}.rules"),
                TOO_MANY_NUDGES,
                format!("a flow has at most {MAX_RULES} nudge rules, not {}", items.len()),
            );
            return NudgePlan::default();
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            add(problems, format!("{at}.rules"), flow_codes::WRONG_TYPE, "`rules` is an array of nudge rules");
            &[]
        }
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut rules = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let rule_at = format!("{at}.rules[{i}]");
        if let Some(key) = raw.get("key").and_then(Value::as_str) {
            if let Some(first) = seen.get(key) {
                add(
                    problems,
                    format!("{rule_at}.key"),
                    DUPLICATE_NUDGE_KEY,
                    format!("nudge key `{}` is already used by {at}.rules[{first}]", shorten(key)),
                );
            } else {
                seen.insert(key, i);
            }
        }
        if let Some(rule) = parse_rule(raw, &rule_at, steps, limits, problems) {
            rules.push(rule);
        }
    }
    NudgePlan { priority, rules }
}

fn parse_rule(
    raw: &Value,
    at: &str,
    steps: &HashMap<String, usize>,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<NudgeRule> {
    let Some(obj) = raw.as_object() else {
        add(problems, at, INVALID_NUDGE, "a nudge rule is a JSON object");
        return None;
    };
    let before = problems.len();
    unknown_fields(
        obj,
        at,
        &["key", "trigger", "condition", "title", "message", "channel", "holdoutPercent"],
        problems,
    );
    let key = match obj.get("key") {
        Some(Value::String(k)) if is_valid_key(k) => Some(k.clone()),
        Some(Value::String(k)) => {
            add(
                problems,
                format!("{at}.key"),
                flow_codes::INVALID_KEY,
                format!("`{}` is not a valid key: start with a letter, then letters, digits, `_` or `-`", shorten(k)),
            );
            None
        }
        Some(_) => {
            add(problems, format!("{at}.key"), flow_codes::WRONG_TYPE, "`key` is a string");
            None
        }
        None => {
            add(problems, format!("{at}.key"), flow_codes::MISSING_FIELD, "`key` is required");
            None
        }
    };
    let trigger = parse_trigger(obj.get("trigger"), &format!("{at}.trigger"), steps, problems);
    let condition = match obj.get("condition") {
        None | Some(Value::Null) => None,
        Some(c) => nudge_condition(c, &format!("{at}.condition"), steps, limits, problems),
    };
    let title = text(obj, at, "title", MAX_TITLE_CHARS, problems);
    let message = text(obj, at, "message", MAX_MESSAGE_CHARS, problems);
    let channel = match obj.get("channel") {
        None | Some(Value::Null) => Some(Channel::InApp),
        Some(Value::String(c)) => Channel::parse(c).or_else(|| {
            add(
                problems,
                format!("{at}.channel"),
                INVALID_NUDGE,
                format!("channel is in_app, webhook or both, not `{}`", shorten(c)),
            );
            None
        }),
        Some(_) => {
            add(
                problems,
                format!("{at}.channel"),
                flow_codes::WRONG_TYPE,
                "channel is a string: in_app, webhook or both",
            );
            None
        }
    };
    let holdout_percent = match obj.get("holdoutPercent") {
        None | Some(Value::Null) => Some(0),
        Some(v) => match v.as_u64() {
            Some(p) if p <= 100 => Some(p as u8),
            _ => {
                add(
                    problems,
                    format!("{at}.holdoutPercent"),
                    INVALID_NUDGE,
                    "holdoutPercent is a whole number from 0 to 100",
                );
                None
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    Some(NudgeRule {
        key: key?,
        trigger: trigger?,
        condition,
        title: title?,
        message: message?,
        channel: channel?,
        holdout_percent: holdout_percent?,
    })
}

fn parse_trigger(
    raw: Option<&Value>,
    at: &str,
    steps: &HashMap<String, usize>,
    problems: &mut Vec<Problem>,
) -> Option<NudgeTrigger> {
    let Some(raw) = raw else {
        add(problems, at, flow_codes::MISSING_FIELD, "a nudge rule needs a `trigger`");
        return None;
    };
    let Some(obj) = raw.as_object() else {
        add(problems, at, INVALID_NUDGE, "a trigger is an object: {\"kind\": ..., \"after\": \"24h\"}");
        return None;
    };
    let kind = match obj.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => {
            add(problems, format!("{at}.kind"), flow_codes::WRONG_TYPE, "`kind` is a string");
            return None;
        }
        None => {
            add(
                problems,
                format!("{at}.kind"),
                flow_codes::MISSING_FIELD,
                "a trigger has a `kind`: not_started, no_progress, stuck or abandoned",
            );
            return None;
        }
    };
    let known: &[&str] = match kind {
        "not_started" | "abandoned" => &["kind", "after"],
        "no_progress" => &["kind", "after", "every", "maxCount"],
        "stuck" => &["kind", "step", "after"],
        other => {
            add(
                problems,
                format!("{at}.kind"),
                INVALID_NUDGE,
                format!("unknown trigger kind `{}`: not_started, no_progress, stuck or abandoned", shorten(other)),
            );
            return None;
        }
    };
    unknown_fields(obj, at, known, problems);
    let after: Option<Duration> = duration_inner(obj, at, "after", true, problems).flatten();
    match kind {
        "not_started" => Some(NudgeTrigger::NotStarted { after: after? }),
        "abandoned" => Some(NudgeTrigger::Abandoned { after: after? }),
        "no_progress" => {
            let every: Option<Option<Duration>> = duration_inner(obj, at, "every", false, problems);
            let max_count = match obj.get("maxCount") {
                None | Some(Value::Null) => Some(1),
                Some(v) => match v.as_u64() {
                    Some(n) if (1..=u64::from(MAX_REPEATS)).contains(&n) => Some(n as u32),
                    _ => {
                        add(
                            problems,
                            format!("{at}.maxCount"),
                            INVALID_NUDGE,
                            format!("maxCount is a whole number from 1 to {MAX_REPEATS}"),
                        );
                        None
                    }
                },
            };
            let after = after?;
            // Without `every` a repeat waits as long as the first reminder did.
            let every = every?.unwrap_or(after);
            Some(NudgeTrigger::NoProgress { after, every, max_count: max_count? })
        }
        _ => {
            let step = match obj.get("step") {
                Some(Value::String(s)) if steps.contains_key(s) => Some(s.clone()),
                Some(Value::String(s)) => {
                    add(
                        problems,
                        format!("{at}.step"),
                        UNKNOWN_NUDGE_STEP,
                        format!("no step has the key `{}`", shorten(s)),
                    );
                    None
                }
                Some(_) => {
                    add(problems, format!("{at}.step"), flow_codes::WRONG_TYPE, "`step` is a step key");
                    None
                }
                None => {
                    add(problems, format!("{at}.step"), flow_codes::MISSING_FIELD, "a stuck trigger names its `step`");
                    None
                }
            };
            Some(NudgeTrigger::Stuck { step: step?, after: after? })
        }
    }
}

/// A duration field; `Some(None)` when an optional one is absent, None on a problem.
fn duration_inner(
    obj: &Map<String, Value>,
    at: &str,
    field: &str,
    required: bool,
    problems: &mut Vec<Problem>,
) -> Option<Option<Duration>> {
    match obj.get(field) {
        None | Some(Value::Null) if required => {
            add(problems, format!("{at}.{field}"), flow_codes::MISSING_FIELD, format!("`{field}` is required"));
            None
        }
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => match parse_duration(s) {
            Ok(d) => Some(Some(d)),
            Err(message) => {
                add(problems, format!("{at}.{field}"), INVALID_DURATION, message);
                None
            }
        },
        Some(_) => {
            add(
                problems,
                format!("{at}.{field}"),
                INVALID_DURATION,
                format!("`{field}` is a duration string such as \"24h\" or \"P7D\""),
            );
            None
        }
    }
}

/// A title or message: a string, or a map of locale to string (as the flow's own texts),
/// each translation within `max` characters.
fn text(
    obj: &Map<String, Value>,
    at: &str,
    field: &str,
    max: usize,
    problems: &mut Vec<Problem>,
) -> Option<LocalizedText> {
    let text = crate::domain::validation::localized_text(obj, at, field, problems)?;
    let too_long: Vec<String> = match &text {
        LocalizedText::Plain(s) => (s.chars().count() > max).then(|| format!("{at}.{field}")).into_iter().collect(),
        LocalizedText::Localized(texts) => texts
            .iter()
            .filter(|(_, s)| s.chars().count() > max)
            .map(|(tag, _)| format!("{at}.{field}.{}", shorten(tag)))
            .collect(),
    };
    for path in &too_long {
        add(problems, path, NUDGE_TEXT_TOO_LONG, format!("`{field}` has at most {max} characters"));
    }
    too_long.is_empty().then_some(text)
}

fn unknown_fields(obj: &Map<String, Value>, at: &str, known: &[&str], problems: &mut Vec<Problem>) {
    let mut reported = HashSet::new();
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        if reported.insert(key) {
            let key = shorten(key);
            add(
                problems,
                format!("{at}.{key}"),
                flow_codes::UNKNOWN_FIELD,
                format!("unknown field `{key}`; known fields: {}", known.join(", ")),
            );
        }
    }
}
