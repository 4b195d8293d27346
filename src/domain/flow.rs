//! A flow definition: the ordered steps a subject goes through, as product teams write
//! them in JSON. Values of these types are always valid: the only way to build one from
//! input is `validation::parse_flow`.

use serde_json::{Map, Value, json};

use super::condition::Condition;
use super::text::LocalizedText;

#[derive(Clone, Debug, PartialEq)]
pub struct FlowDefinition {
    pub key: String,
    pub title: LocalizedText,
    pub description: Option<LocalizedText>,
    /// The locale of plain texts and the last fallback; None: `text::FALLBACK_LOCALE`.
    pub default_locale: Option<String>,
    pub scope: FlowScope,
    /// Who the flow is for, over subject attributes; absent: everyone. Subjects in the
    /// audience are enrolled automatically; others cannot enroll.
    pub audience: Option<Condition>,
    /// In display order.
    pub steps: Vec<StepDefinition>,
    /// Reminders over this flow's progress (`domain::nudges`); empty when none.
    pub nudges: super::nudges::NudgePlan,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepDefinition {
    pub key: String,
    pub title: LocalizedText,
    pub description: Option<LocalizedText>,
    pub required: bool,
    pub skippable: bool,
    /// When absent, the step applies to everyone.
    pub condition: Option<Condition>,
    pub depends_on: Vec<String>,
    pub trigger: Option<Trigger>,
    pub points: i64,
}

/// An event that completes a step by itself (acted on by event ingestion).
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub event: String,
    /// A condition over the event's properties.
    pub when: Option<Condition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowScope {
    /// One progress per subject.
    User,
    /// One progress per workspace, shared by its members.
    Workspace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowStatus {
    Draft,
    Active,
    Deprecated,
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$variant),)* _ => None }
            }
        }
    };
}
pub(crate) use names;

names!(FlowScope { User => "USER", Workspace => "WORKSPACE" });
names!(FlowStatus { Draft => "DRAFT", Active => "ACTIVE", Deprecated => "DEPRECATED" });

impl FlowDefinition {
    /// The subject, with these attributes, is in the flow's audience.
    pub fn admits(&self, attributes: &Value) -> bool {
        let no_answers = std::collections::BTreeMap::new();
        let facts = super::condition::Facts { attributes, answers: &no_answers };
        self.audience.as_ref().is_none_or(|c| c.evaluate(&facts))
    }

    /// Subjects with these attributes are enrolled without asking: the flow names an
    /// audience, and it admits them. Flows without an audience are entered explicitly.
    pub fn enrolls_automatically(&self, attributes: &Value) -> bool {
        self.audience.is_some() && self.admits(attributes)
    }

    /// The locale plain texts are in and requests fall back to.
    pub fn default_locale(&self) -> &str {
        self.default_locale.as_deref().unwrap_or(super::text::FALLBACK_LOCALE)
    }

    pub fn step(&self, key: &str) -> Option<&StepDefinition> {
        self.steps.iter().find(|s| s.key == key)
    }

    /// The canonical JSON form that is stored: every default spelled out, conditions in
    /// their long form, so a stored definition reads the same whatever shorthand it used.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("key".into(), json!(self.key));
        m.insert("title".into(), self.title.to_json());
        if let Some(d) = &self.description {
            m.insert("description".into(), d.to_json());
        }
        if let Some(l) = &self.default_locale {
            m.insert("defaultLocale".into(), json!(l));
        }
        m.insert("scope".into(), json!(self.scope.name()));
        if let Some(a) = &self.audience {
            m.insert("audience".into(), a.to_json());
        }
        m.insert("steps".into(), Value::Array(self.steps.iter().map(StepDefinition::to_json).collect()));
        if !self.nudges.is_empty() {
            m.insert("nudges".into(), self.nudges.to_json());
        }
        Value::Object(m)
    }
}

impl StepDefinition {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("key".into(), json!(self.key));
        m.insert("title".into(), self.title.to_json());
        if let Some(d) = &self.description {
            m.insert("description".into(), d.to_json());
        }
        m.insert("required".into(), json!(self.required));
        m.insert("skippable".into(), json!(self.skippable));
        if let Some(c) = &self.condition {
            m.insert("condition".into(), c.to_json());
        }
        m.insert("dependsOn".into(), json!(self.depends_on));
        if let Some(t) = &self.trigger {
            let mut tm = Map::new();
            tm.insert("event".into(), json!(t.event));
            if let Some(w) = &t.when {
                tm.insert("where".into(), w.to_json());
            }
            m.insert("trigger".into(), Value::Object(tm));
        }
        m.insert("points".into(), json!(self.points));
        Value::Object(m)
    }
}
