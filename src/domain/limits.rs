//! Product limits: how large and how deep any input may be. Each is checked before work
//! is done, when a value comes in (never when stored data is read back, so lowering a
//! limit never makes saved data unreadable). Defaults are documented in the README's
//! "Limits and security" section; every one can be changed by configuration.

use std::borrow::Cow;

use serde_json::Value;

/// Limits on what the engine accepts. `Limits::default()` is the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nesting depth of any JSON value taken in (metadata, attributes, event properties,
    /// flow definitions). Arrays and objects count one level each.
    pub json_depth: usize,
    /// Serialized size of a completed step's metadata.
    pub metadata_bytes: usize,
    /// Serialized size of a subject's or workspace's attributes.
    pub attributes_bytes: usize,
    /// Serialized size of an event's properties.
    pub event_properties_bytes: usize,
    /// Serialized size of a flow definition.
    pub definition_bytes: usize,
    /// Length of a subject, workspace or event id.
    pub id_bytes: usize,
    /// Length of a flow, step, experiment or other key.
    pub key_bytes: usize,
    /// Steps in one flow definition.
    pub steps_per_flow: usize,
    /// `dependsOn` entries of one step.
    pub depends_on_per_step: usize,
    /// Nodes (operators and leaves) of one condition.
    pub condition_nodes: usize,
    /// Nesting depth of one condition.
    pub condition_depth: usize,
    /// Points one step may award.
    pub points_per_step: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_depth: 32,
            metadata_bytes: 16 * 1024,
            attributes_bytes: 64 * 1024,
            event_properties_bytes: 32 * 1024,
            definition_bytes: 1024 * 1024,
            id_bytes: 256,
            key_bytes: 128,
            steps_per_flow: 500,
            depends_on_per_step: 64,
            condition_nodes: 256,
            condition_depth: 16,
            points_per_step: 1_000_000,
        }
    }
}

impl Limits {
    /// No product limit at all: what reading stored data back uses, so a definition
    /// accepted under earlier (higher) limits stays readable.
    pub fn unbounded() -> Self {
        Limits {
            json_depth: usize::MAX,
            metadata_bytes: usize::MAX,
            attributes_bytes: usize::MAX,
            event_properties_bytes: usize::MAX,
            definition_bytes: usize::MAX,
            id_bytes: usize::MAX,
            key_bytes: usize::MAX,
            steps_per_flow: usize::MAX,
            depends_on_per_step: usize::MAX,
            condition_nodes: usize::MAX,
            condition_depth: usize::MAX,
            points_per_step: i64::MAX,
        }
    }

    /// A subject, workspace or event id: 1 to `id_bytes` bytes.
    pub fn check_id(&self, what: &str, id: &str) -> Result<(), String> {
        check_length(what, id, self.id_bytes)
    }

    /// A flow, step, experiment or variant key as it is looked up: 1 to `key_bytes` bytes.
    /// (What a key may look like when it is defined is checked where it is defined.)
    pub fn check_key(&self, what: &str, key: &str) -> Result<(), String> {
        check_length(what, key, self.key_bytes)
    }

    /// A completed step's metadata.
    pub fn check_metadata(&self, value: &Value) -> Result<(), String> {
        check_json("metadata", value, self.json_depth, self.metadata_bytes)
    }

    /// A subject's or workspace's attributes.
    pub fn check_attributes(&self, value: &Value) -> Result<(), String> {
        check_json("attributes", value, self.json_depth, self.attributes_bytes)
    }

    /// An event's properties.
    pub fn check_event_properties(&self, value: &Value) -> Result<(), String> {
        check_json("properties", value, self.json_depth, self.event_properties_bytes)
    }

    /// A flow definition, before it is parsed.
    pub fn check_definition(&self, value: &Value) -> Result<(), JsonRefusal> {
        check_json_value("a flow definition", value, self.json_depth, self.definition_bytes)
    }
}

/// The deepest JSON accepted whatever the configuration: serde_json reads back at most 128
/// levels, and stored values sit a few levels down inside other documents.
pub const MAX_JSON_DEPTH: usize = 100;

/// The most characters of client input ever repeated back in a message.
pub const ECHO_CHARS: usize = 100;

/// Client input as repeated back in a message: at most `ECHO_CHARS` characters, with an
/// ellipsis and the full length when it was cut, so a huge argument is never echoed whole.
pub fn shorten(input: &str) -> Cow<'_, str> {
    match input.char_indices().nth(ECHO_CHARS) {
        None => Cow::Borrowed(input),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &input[..end], input.len())),
    }
}

fn check_length(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} cannot be empty"));
    }
    if value.len() > max {
        return Err(format!("{what} is {} bytes long; at most {max} are allowed", value.len()));
    }
    Ok(())
}

/// A JSON value that can be stored and read back: no deeper than `max_depth` (arrays and
/// objects count one level each; serde_json reads back no deeper than 128), no larger than
/// `max_bytes` as compact JSON, and no NUL character (PostgreSQL text and jsonb cannot hold
/// it). The walk is iterative, so a hostile value cannot overflow the stack here; the size
/// is counted by serializing once into a counter that stops at the limit, and only after
/// the depth is known to be small.
pub fn check_json(what: &str, value: &Value, max_depth: usize, max_bytes: usize) -> Result<(), String> {
    check_json_value(what, value, max_depth, max_bytes).map_err(|r| r.message)
}

/// Why a JSON value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonRefusalKind {
    TooDeep,
    TooLarge,
    Nul,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonRefusal {
    pub kind: JsonRefusalKind,
    pub message: String,
}

/// `check_json`, telling why.
pub fn check_json_value(what: &str, value: &Value, max_depth: usize, max_bytes: usize) -> Result<(), JsonRefusal> {
    let max_depth = max_depth.min(MAX_JSON_DEPTH);
    // (value, its depth): containers are one level deeper than what holds them.
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    let nul = || JsonRefusal {
        kind: JsonRefusalKind::Nul,
        message: format!("{what} cannot contain the NUL character (\\u0000)"),
    };
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return Err(nul()),
            Value::Array(items) => {
                if depth + 1 > max_depth {
                    return Err(too_deep(what, max_depth));
                }
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(map) => {
                if depth + 1 > max_depth {
                    return Err(too_deep(what, max_depth));
                }
                for (k, item) in map {
                    if k.contains('\0') {
                        return Err(nul());
                    }
                    stack.push((item, depth + 1));
                }
            }
            _ => {}
        }
    }
    if max_bytes < usize::MAX {
        let mut counter = Counter { left: max_bytes };
        if serde_json::to_writer(&mut counter, value).is_err() {
            return Err(JsonRefusal {
                kind: JsonRefusalKind::TooLarge,
                message: format!("{what} is larger than {max_bytes} bytes as JSON"),
            });
        }
    }
    Ok(())
}

fn too_deep(what: &str, max_depth: usize) -> JsonRefusal {
    JsonRefusal {
        kind: JsonRefusalKind::TooDeep,
        message: format!("{what} is nested deeper than {max_depth} levels (arrays and objects count one level each)"),
    }
}

/// Counts bytes written and fails once more than `left` arrive.
struct Counter {
    left: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.left = self.left.checked_sub(buf.len()).ok_or_else(|| std::io::Error::other("too large"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = json!("leaf");
        for i in 0..depth {
            v = if i % 2 == 0 { json!([v]) } else { json!({ "k": v }) };
        }
        v
    }

    #[test]
    fn depth_counts_arrays_and_objects_and_stops_at_the_limit() {
        assert!(check_json("x", &json!(1), 0, usize::MAX).is_ok());
        assert!(check_json("x", &json!([]), 0, usize::MAX).is_err());
        assert!(check_json("x", &nested(32), 32, usize::MAX).is_ok());
        let err = check_json("metadata", &nested(33), 32, usize::MAX).unwrap_err();
        assert!(err.starts_with("metadata is nested deeper than 32 levels"), "{err}");
        // Far deeper than serde_json (or a recursive walk) could handle is refused all the same.
        let err = check_json_value("x", &nested(1_000), 32, usize::MAX).unwrap_err();
        assert_eq!(err.kind, JsonRefusalKind::TooDeep);
    }

    #[test]
    fn no_configuration_admits_what_cannot_be_read_back() {
        let err = check_json_value("x", &nested(MAX_JSON_DEPTH + 1), usize::MAX, usize::MAX).unwrap_err();
        assert_eq!(err.kind, JsonRefusalKind::TooDeep);
        // What is admitted is read back by serde_json, even nested inside a stored document.
        let deepest = nested(MAX_JSON_DEPTH);
        let stored = json!({ "steps": { "a": { "metadata": deepest } } }).to_string();
        assert!(serde_json::from_str::<Value>(&stored).is_ok());
    }

    #[test]
    fn size_is_the_compact_json_length() {
        let v = json!({ "a": "é\n", "b": [1, 2.5, null] });
        let len = serde_json::to_string(&v).unwrap().len();
        assert!(check_json("x", &v, 32, len).is_ok());
        let err = check_json_value("x", &v, 32, len - 1).unwrap_err();
        assert_eq!(err.kind, JsonRefusalKind::TooLarge);
    }

    #[test]
    fn nul_is_refused_in_keys_and_strings_at_any_depth() {
        assert_eq!(check_json_value("x", &json!({"a\u{0}": 1}), 32, 100).unwrap_err().kind, JsonRefusalKind::Nul);
        assert_eq!(check_json_value("x", &json!([[["\u{0}"]]]), 32, 100).unwrap_err().kind, JsonRefusalKind::Nul);
    }

    #[test]
    fn ids_and_keys_are_bounded_in_bytes() {
        let limits = Limits::default();
        assert!(limits.check_id("id", &"é".repeat(128)).is_ok());
        assert!(limits.check_id("id", &"é".repeat(129)).is_err());
        assert!(limits.check_id("id", "").is_err());
        assert!(limits.check_key("key", &"k".repeat(128)).is_ok());
        let err = limits.check_key("flowKey", &"k".repeat(1_000_000)).unwrap_err();
        assert!(err.len() < 100, "{err}");
    }

    #[test]
    fn shorten_keeps_short_input_and_cuts_long_input_on_a_character() {
        assert_eq!(shorten("welcome"), "welcome");
        let exact = "x".repeat(ECHO_CHARS);
        assert_eq!(shorten(&exact), exact.as_str());
        let long = "é".repeat(10_000);
        let short = shorten(&long);
        assert!(short.starts_with(&"é".repeat(ECHO_CHARS)));
        assert!(short.chars().count() < ECHO_CHARS + 20, "{short}");
        assert!(short.ends_with("(20000 bytes)"), "{short}");
    }
}
