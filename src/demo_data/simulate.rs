//! One generated subject, as a pure function of (seed, index, until, the flow versions):
//! its state is built by running the engine's own domain commands at increasing times,
//! exactly as the write path (`service::advance`) would, so the rows are what the engine
//! would have written had these users really gone through the flow.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use crate::domain::condition::{Condition, Op, Path};
use crate::domain::experiments::{self, Variant};
use crate::domain::progress::{self, view};
use crate::domain::{
    Command, Enrollment, EnrollmentStatus, EventFact, FlowDefinition, Outcome, Source, StepStatus, changes, triggers,
};
use crate::persistence::flows::FlowRecord;

use super::nudges::{self, Logged, Nudges};

/// SplitMix64: small, fast, and the same numbers on every machine for a given seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// An independent stream per (run seed, subject, purpose), so a subject's data does not
    /// depend on which thread generated it or on the subjects before it.
    pub(crate) fn stream(seed: u64, index: u64, purpose: u64) -> Rng {
        Rng(mix(mix(mix(seed) ^ index) ^ purpose))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, weighted: &'a [(T, u32)]) -> &'a T {
        let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut point = self.below(total);
        for (item, weight) in weighted {
            if point < u64::from(*weight) {
                return item;
            }
            point -= u64::from(*weight);
        }
        &weighted[weighted.len() - 1].0
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal seconds around a median: most gaps near it, a long tail of slow ones.
    pub(super) fn gap(&mut self, median_secs: f64, sigma: f64) -> f64 {
        median_secs * (sigma * self.normal()).exp()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The share of each kind of subject, per seed 002: completed, in progress at some step,
/// enrolled but not started, and skipped (the whole flow dismissed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Completed,
    InProgress,
    NotStarted,
    Skipped,
}

const KINDS: [(Kind, u32); 4] =
    [(Kind::Completed, 60), (Kind::InProgress, 20), (Kind::NotStarted, 10), (Kind::Skipped, 10)];
const ROLES: [(&str, u32); 5] = [("developer", 35), ("admin", 20), ("manager", 15), ("designer", 15), ("marketer", 15)];
const PLANS: [(&str, u32); 3] = [("free", 50), ("pro", 30), ("team", 20)];

/// Weeks of later activity drawn per subject (its retention).
const ACTIVITY_WEEKS: i64 = 6;

/// How new subjects of the flow get their version: the engine's rules (`service::entry`).
#[derive(Clone, Debug)]
pub(crate) enum Experiment {
    None,
    /// Assigns by the hash; the first serving is the subject's exposure.
    Running {
        id: i64,
        key: String,
        variants: Vec<Variant>,
        flows: Vec<Option<FlowRecord>>,
    },
    /// A declared winner: everyone gets its version, with no exposure.
    Winner {
        key: String,
        variant: String,
        flow: FlowRecord,
    },
}

/// Everything fixed for one run.
#[derive(Clone, Debug)]
pub(crate) struct World {
    pub seed: u64,
    pub until: DateTime<Utc>,
    pub window_secs: i64,
    /// The newest active version.
    pub latest: FlowRecord,
    pub experiment: Experiment,
    /// The step whose completion drives later activity most.
    pub key_step: String,
    /// The name of the later-activity events (no trigger of the flow listens to it).
    pub activity_event: String,
}

/// A product event the subject sent.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GeneratedEvent {
    pub id: String,
    pub name: String,
    pub properties: Value,
    pub at: DateTime<Utc>,
}

/// One points award.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Award {
    pub amount: i64,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Which experiment put the subject on its version.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Assigned {
    pub experiment_key: String,
    pub variant: String,
    /// The running experiment's id, when the enrollment was the subject's exposure.
    pub exposure: Option<i64>,
}

/// Everything stored about one subject.
#[derive(Clone, Debug)]
pub(crate) struct Generated {
    pub external_id: String,
    pub attributes: Value,
    pub flow_id: i64,
    pub flow_version: i32,
    /// The definition of the enrolled version (its nudge rules name the log's texts).
    pub definition: Arc<FlowDefinition>,
    pub assigned: Option<Assigned>,
    pub enrollment: Enrollment,
    /// Each step row's updated_at: the enrollment's last activity when the engine last
    /// saved the row.
    pub updated: BTreeMap<String, DateTime<Utc>>,
    pub ledger: Vec<Award>,
    pub events: Vec<GeneratedEvent>,
    /// What the scheduler did with each nudge occurrence due by `until`.
    pub nudge_log: Vec<Logged>,
    /// The `nudge_schedule` rows, one per rule in the flow's order: for an enrollment in
    /// progress only (a finished one's rows would say "never", as no row does).
    pub schedule: Vec<nudges::Row>,
}

impl Generated {
    /// Enrolled, with no step acted on.
    pub fn not_started(&self) -> bool {
        self.enrollment.status == EnrollmentStatus::InProgress
            && !self.enrollment.steps.values().any(|s| s.is_touched())
    }
}

impl World {
    /// The natural actions of a subject end before this (a minute before `until`).
    fn latest_allowed(&self) -> DateTime<Utc> {
        self.until - Duration::seconds(60)
    }

    /// The version (and experiment assignment) a new subject gets.
    fn target(&self, subject: &str) -> (&FlowRecord, Option<Assigned>) {
        match &self.experiment {
            Experiment::None => (&self.latest, None),
            Experiment::Running { id, key, variants, flows } => {
                let chosen = experiments::assign(key, subject, variants)
                    .and_then(|v| variants.iter().position(|x| x.name == v.name))
                    .and_then(|i| flows[i].as_ref().map(|f| (f, &variants[i].name)));
                match chosen {
                    Some((flow, variant)) => (
                        flow,
                        Some(Assigned { experiment_key: key.clone(), variant: variant.clone(), exposure: Some(*id) }),
                    ),
                    None => (&self.latest, None),
                }
            }
            Experiment::Winner { key, variant, flow } => {
                (flow, Some(Assigned { experiment_key: key.clone(), variant: variant.clone(), exposure: None }))
            }
        }
    }

    /// Subject `index` of this run.
    pub fn subject(&self, index: u64) -> Result<Generated, String> {
        let mut decide = Rng::stream(self.seed, index, 1);
        let external_id = format!("demo-{}-{index}", self.seed);
        let (flow, assigned) = self.target(&external_id);
        let attributes = attributes(&mut decide, &flow.definition)
            .ok_or_else(|| format!("the audience of flow `{}` admits no demo subject", flow.key))?;
        let kind = *decide.pick(&KINDS);

        // Enrolled some time in the window, more recently more often (a growing product):
        // half uniform, half a ramp towards `until`. At least ten minutes ago.
        let u = decide.unit();
        let fraction = if decide.chance(0.5) { u } else { 1.0 - (1.0 - u).sqrt() };
        let age = ((self.window_secs as f64 * fraction) as i64).max(600);
        let started = self.until - Duration::seconds(age);

        // The flow's actions at natural pace; squeezed into the time left when they would
        // run past `until` (the decisions replay identically, only the gaps shrink).
        // Nudges play along (see `Run::wait`); the natural actions are what must fit.
        let replay = decide.clone();
        let mut run = Run::new(self, index, &flow.definition, &attributes, &external_id, started);
        run.play(kind, &mut decide, 1.0);
        if run.overran {
            let natural = (run.now - started).num_seconds().max(1) as f64;
            let room = (self.latest_allowed() - started).num_seconds().max(1) as f64;
            decide = replay;
            run = Run::new(self, index, &flow.definition, &attributes, &external_id, started);
            run.squeezed = true;
            run.play(kind, &mut decide, 0.9 * room / natural);
        }
        let Engine { state, updated, ledger, mut events, nudges, .. } = run.sim;
        activity(self, index, &flow.definition, &state, &mut events);
        let (nudge_log, schedule) = match nudges {
            Some(n) if state.status == EnrollmentStatus::InProgress => (n.log, n.rows),
            Some(n) => (n.log, Vec::new()),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Generated {
            external_id,
            attributes,
            flow_id: flow.id,
            flow_version: flow.version,
            definition: flow.definition.clone(),
            assigned,
            enrollment: state,
            updated,
            ledger,
            events,
            nudge_log,
            schedule,
        })
    }
}

/// Plausible attributes the flow's audience admits.
fn attributes(rng: &mut Rng, flow: &FlowDefinition) -> Option<Value> {
    for _ in 0..1000 {
        let attributes = json!({ "role": rng.pick(&ROLES), "plan": rng.pick(&PLANS) });
        if flow.admits(&attributes) {
            return Some(attributes);
        }
    }
    None
}

/// The engine's write path for one subject, minus the database: every use case applies
/// its command, lets stored events complete what they trigger, marks what became reachable,
/// awards points through the ledger and "saves" the rows that changed.
struct Engine<'a> {
    flow: &'a FlowDefinition,
    attributes: &'a Value,
    actor: &'a str,
    has_triggers: bool,
    state: Enrollment,
    facts: Vec<EventFact>,
    updated: BTreeMap<String, DateTime<Utc>>,
    ledger: Vec<Award>,
    events: Vec<GeneratedEvent>,
    /// The flow's nudge schedule and log, when it has rules.
    nudges: Option<Nudges>,
}

impl Engine<'_> {
    /// One use case at `now`: `service::advance` with `change`. False when the domain
    /// refused the command (the engine would roll back: nothing changes).
    fn advance(&mut self, change: Option<(Command, Source)>, now: DateTime<Utc>) -> bool {
        let before = self.state.clone();
        let mut outcome = match change {
            Some((command, source)) => {
                match progress::apply(self.flow, self.attributes, &mut self.state, command, source, now) {
                    Ok(outcome) => {
                        progress::credit(&mut self.state, &outcome.changed_steps, self.actor);
                        outcome
                    }
                    Err(_) => return false,
                }
            }
            None => Outcome::default(),
        };
        if self.has_triggers {
            outcome.absorb(triggers::settle(self.flow, self.attributes, &mut self.state, &self.facts, now));
        }
        let reached = progress::mark_reached(self.flow, self.attributes, &mut self.state, now);
        if outcome.changed {
            let events = changes::between(&before, &self.state, &outcome.changed_steps);
            for award in changes::awards(self.flow, &events) {
                if !self.ledger.iter().any(|a| a.reason == award.reason) {
                    self.ledger.push(Award { amount: award.amount, reason: award.reason, at: now });
                }
            }
            // The engine reads the total back from the ledger.
            self.state.points = self.ledger.iter().map(|a| a.amount).sum();
        }
        // The rows `enrollments::save_all` writes, stamped with the enrollment's last activity.
        let saved = if outcome.changed { &outcome.changed_steps[..] } else { &[] };
        for key in saved.iter().chain(&reached) {
            self.updated.insert(key.clone(), self.state.last_activity_at);
        }
        // The same write stores each rule's next due time.
        if let Some(nudges) = &mut self.nudges {
            nudges.written(self.flow, self.attributes, &self.state);
        }
        true
    }

    /// The nudge scheduler over `(from, to]`: when a nudge sent brings the subject back.
    fn nudge(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cx =
            nudges::Context { flow: self.flow, attributes: self.attributes, state: &self.state, subject: self.actor };
        self.nudges.as_mut()?.run(&cx, from, to)
    }

    /// The subject's product sends an event (`trackEvents`), received at once.
    fn event(&mut self, id: String, name: &str, properties: Value, now: DateTime<Utc>) {
        self.facts.push(EventFact {
            id: id.clone(),
            name: name.to_string(),
            properties: properties.clone(),
            occurred_at: now,
            actor: Some(self.actor.to_string()),
        });
        self.events.push(GeneratedEvent { id, name: name.to_string(), properties, at: now });
        self.advance(None, now);
    }
}

/// One subject going through the flow.
struct Run<'a> {
    world: &'a World,
    index: u64,
    sim: Engine<'a>,
    now: DateTime<Utc>,
    gaps: Rng,
    scale: f64,
    /// A nudge brought the subject back: it now finishes the flow, as far as `until` lets it.
    committed: bool,
    /// A natural action fell after `World::latest_allowed`: the play is measured and replayed
    /// squeezed (nudges stop for the rest of this one, so its length is the natural one).
    overran: bool,
    /// This is the squeezed replay: it is kept whatever its length.
    squeezed: bool,
}

impl<'a> Run<'a> {
    fn new(
        world: &'a World,
        index: u64,
        flow: &'a FlowDefinition,
        attributes: &'a Value,
        actor: &'a str,
        started: DateTime<Utc>,
    ) -> Self {
        let nudges =
            (!flow.nudges.is_empty()).then(|| Nudges::new(flow.nudges.rules.len(), Rng::stream(world.seed, index, 4)));
        let sim = Engine {
            flow,
            attributes,
            actor,
            has_triggers: !flow.trigger_events().is_empty(),
            state: Enrollment::new(started),
            facts: Vec::new(),
            updated: BTreeMap::new(),
            ledger: Vec::new(),
            events: Vec::new(),
            nudges,
        };
        Run {
            world,
            index,
            sim,
            now: started,
            gaps: Rng::stream(world.seed, index, 2),
            scale: 1.0,
            committed: false,
            overran: false,
            squeezed: false,
        }
    }

    /// Moves the clock on by a log-normal gap around `median_secs` (at least a second), to
    /// the subject's next action. The nudges due meanwhile are decided; one that brings the
    /// subject back ends the wait then, and commits the subject to finishing. False when
    /// the action would fall after `until` (only once committed: the natural actions are
    /// squeezed to fit), and the subject does nothing more.
    fn wait(&mut self, median_secs: f64) -> bool {
        let secs = (self.gaps.gap(median_secs, 1.3) * self.scale).clamp(1.0, 90.0 * 86_400.0);
        let mut next = self.now + Duration::seconds(secs as i64);
        if let Some(back) = self.sim.nudge(self.now, next.min(self.world.until)) {
            next = next.min(back);
            self.committed = true;
        }
        if self.committed && next > self.world.until {
            // Time is up: any later wait ends here too.
            self.now = self.world.until;
            return false;
        }
        if !self.committed && !self.squeezed && next > self.world.latest_allowed() {
            self.overran = true;
            self.sim.nudges = None;
        }
        self.now = next;
        true
    }

    /// After its last action the subject stays away until `until`, unless a nudge sent
    /// meanwhile brings it back (true: it is back, committed to finishing).
    fn idle(&mut self) -> bool {
        if self.now >= self.world.until {
            return false;
        }
        match self.sim.nudge(self.now, self.world.until) {
            Some(back) if back <= self.world.until => {
                self.now = back;
                self.committed = true;
                true
            }
            _ => false,
        }
    }

    /// Typical time to get a step done: later steps take longer, and the last required
    /// step (the real set-up work) much longer.
    fn pace(&self, step: &str) -> f64 {
        let flow = self.sim.flow;
        let index = flow.steps.iter().position(|s| s.key == step).unwrap_or(0);
        let slow = flow.steps.iter().rev().find(|s| s.required).is_some_and(|s| s.key == step);
        15.0 * 60.0 * (1.0 + index as f64) * if slow { 5.0 } else { 1.0 }
    }

    fn play(&mut self, kind: Kind, decide: &mut Rng, scale: f64) {
        self.scale = scale;
        let flow = self.sim.flow;
        // Enrolling: the subject opens the checklist.
        self.sim.advance(Some((Command::Start, Source::User)), self.now);
        if kind != Kind::NotStarted {
            let required = view(flow, self.sim.attributes, &self.sim.state.steps)
                .steps
                .iter()
                .filter(|s| s.definition.required)
                .count() as u64;
            // Subjects who stop (in progress, or dismissing the flow) stop before one of the
            // required steps: after 0 to required - 1 of them.
            let stop_after = match kind {
                Kind::Completed | Kind::NotStarted => u64::MAX,
                Kind::InProgress | Kind::Skipped => decide.below(required),
            };
            let stopped_before = self.walk(stop_after, decide);
            if !self.committed {
                self.leave(kind, stopped_before, decide);
            }
            // A nudge during the last waits brought the subject back.
            if self.committed {
                self.walk(u64::MAX, decide);
            }
        }
        while self.idle() {
            self.walk(u64::MAX, decide);
        }
    }

    /// How a subject that stopped leaves the flow: in progress (some having opened the step
    /// they stopped at), or dismissing it an hour later unless a nudge brings it back first.
    fn leave(&mut self, kind: Kind, stopped_before: Option<String>, decide: &mut Rng) {
        match kind {
            Kind::InProgress => {
                // Some have opened the step they stopped at; those with nothing done all have.
                let touched = self.sim.state.steps.values().any(|s| s.is_touched());
                if let Some(step) = stopped_before
                    && (decide.chance(0.5) || !touched)
                    && self.wait(self.pace(&step) / 2.0)
                {
                    self.sim.advance(Some((Command::StartStep { step }, Source::User)), self.now);
                }
            }
            Kind::Skipped => {
                let acts = self.wait(3600.0);
                if acts && !self.committed {
                    self.sim.advance(Some((Command::SkipFlow, Source::User)), self.now);
                }
            }
            Kind::Completed | Kind::NotStarted => {}
        }
    }

    /// Acts on the steps in order, stopping before a required step once `stop_after` of
    /// them are done (unless committed by a nudge), or when `until` comes. The step it
    /// stopped before, if it did.
    fn walk(&mut self, stop_after: u64, decide: &mut Rng) -> Option<String> {
        let flow = self.sim.flow;
        let mut left_alone: Vec<String> = Vec::new();
        for _ in 0..flow.steps.len() * 2 + 2 {
            let progress = view(flow, self.sim.attributes, &self.sim.state.steps);
            let done =
                progress.steps.iter().filter(|s| s.definition.required && s.status == StepStatus::Completed).count()
                    as u64;
            let Some(next) = progress
                .steps
                .iter()
                .find(|s| s.available && !s.status.is_finished() && !left_alone.contains(&s.definition.key))
            else {
                break;
            };
            let def = next.definition;
            let key = def.key.clone();
            // Whether leaving the step alone would lock a step that applies.
            let blocks = progress.steps.iter().any(|s| s.definition.depends_on.contains(&key));
            if def.required && done >= stop_after && !self.committed {
                return Some(key);
            }
            if def.required {
                if !self.wait(self.pace(&key)) {
                    break;
                }
                self.complete(&key, decide);
            } else {
                let keen = if key == self.world.key_step { 0.3 } else { 0.55 };
                if decide.chance(keen) {
                    if !self.wait(self.pace(&key)) {
                        break;
                    }
                    self.complete(&key, decide);
                } else if def.skippable && (decide.chance(0.5) || blocks) {
                    if !self.wait(3.0 * 60.0) {
                        break;
                    }
                    let reason = ["not_now", "not_relevant", ""][decide.below(3) as usize];
                    let reason = (!reason.is_empty()).then(|| reason.to_string());
                    self.sim.advance(Some((Command::SkipStep { step: key, reason }, Source::User)), self.now);
                } else if blocks {
                    if !self.wait(self.pace(&key)) {
                        break;
                    }
                    self.complete(&key, decide);
                } else {
                    left_alone.push(key);
                }
            }
        }
        None
    }

    /// Completes a step the way the product would: by the event its trigger listens to,
    /// or, for a step without one, by the subject's own completeStep.
    fn complete(&mut self, key: &str, decide: &mut Rng) {
        let def = self.sim.flow.step(key);
        if let Some(trigger) = def.and_then(|d| d.trigger.as_ref()) {
            let properties = trigger.when.as_ref().map_or_else(|| json!({}), |c| Value::Object(witness(c, decide)));
            let id = format!("demo-{}-{}-{key}", self.world.seed, self.index);
            self.sim.event(id, &trigger.event.clone(), properties, self.now);
            if self.sim.state.step_status(key) == StepStatus::Completed {
                return;
            }
        }
        let command = Command::CompleteStep { step: key.to_string(), metadata: None };
        self.sim.advance(Some((command, Source::User)), self.now);
    }
}

/// Event properties that satisfy a trigger's `where`, as far as a simple guess goes (the
/// caller falls back to completing the step by hand when it does not).
fn witness(condition: &Condition, rng: &mut Rng) -> Map<String, Value> {
    let mut out = Map::new();
    match condition {
        Condition::All(items) => {
            for item in items {
                merge(&mut out, witness(item, rng));
            }
        }
        Condition::Any(items) => {
            if let Some(first) = items.first() {
                out = witness(first, rng);
            }
        }
        Condition::Not(_) => {}
        Condition::Compare { path: Path::Attribute(parts), op, value } => {
            let chosen = match op {
                Op::Eq | Op::Lte => Some(value.clone()),
                Op::Gte => Some(match value.as_i64() {
                    Some(n) => json!(n + rng.below(3) as i64),
                    None => value.clone(),
                }),
                Op::Gt => match (value.as_i64(), value.as_f64(), value.as_str()) {
                    (Some(n), _, _) => Some(json!(n + 1 + rng.below(3) as i64)),
                    (None, Some(x), _) => Some(json!(x + 1.0)),
                    (_, _, Some(s)) => Some(json!(format!("{s}~"))),
                    _ => None,
                },
                Op::Lt => match (value.as_i64(), value.as_f64()) {
                    (Some(n), _) => Some(json!(n - 1)),
                    (None, Some(x)) => Some(json!(x - 1.0)),
                    _ => None,
                },
                Op::In => value.as_array().and_then(|items| items.first().cloned()),
                Op::Contains => Some(if value.is_string() { value.clone() } else { json!([value]) }),
                Op::Exists => value.as_bool().unwrap_or(true).then_some(Value::Bool(true)),
                Op::Ne | Op::NotIn => None,
            };
            if let (Some(v), Some((last, parents))) = (chosen, parts.split_last()) {
                let mut nested = v;
                let mut key = last.clone();
                for parent in parents.iter().rev() {
                    let mut m = Map::new();
                    m.insert(key, nested);
                    nested = Value::Object(m);
                    key = parent.clone();
                }
                out.insert(key, nested);
            }
        }
        Condition::Compare { .. } => {}
    }
    out
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Later product activity, for retention: each of the weeks after enrolling the subject
/// is active with a probability that grows with the steps it completed, and grows most
/// with the key step. Nothing after `until`.
fn activity(world: &World, index: u64, flow: &FlowDefinition, state: &Enrollment, events: &mut Vec<GeneratedEvent>) {
    let mut rng = Rng::stream(world.seed, index, 3);
    let completed = flow.steps.iter().filter(|s| state.step_status(&s.key) == StepStatus::Completed).count();
    let key_done = state.step_status(&world.key_step) == StepStatus::Completed;
    let engagement = (0.10
        + 0.07 * completed as f64
        + if state.status == EnrollmentStatus::Completed { 0.05 } else { 0.0 }
        + if key_done { 0.45 } else { 0.0 })
    .min(0.95);
    let day = 86_400.0;
    let mut n = 0;
    for week in 0..ACTIVITY_WEEKS {
        let active = rng.chance(engagement * 0.88f64.powi(week as i32));
        let sessions = 1 + usize::from(rng.chance(0.5)) + usize::from(rng.chance(0.2));
        // Week 0 starts the day after enrolling; the others are whole weeks.
        let (from, to) =
            if week == 0 { (day, 7.0 * day) } else { (7.0 * day * week as f64, 7.0 * day * (week + 1) as f64) };
        for _ in 0..sessions {
            let offset = from + rng.unit() * (to - from);
            let at = state.started_at + Duration::seconds(offset as i64);
            if active && at <= world.until {
                events.push(GeneratedEvent {
                    id: format!("demo-{}-{index}.{n}", world.seed),
                    name: world.activity_event.clone(),
                    properties: json!({}),
                    at,
                });
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_splitmix64() {
        // The first outputs of SplitMix64 seeded with 0, as published with the algorithm.
        let mut rng = Rng(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn witnesses_satisfy_simple_trigger_conditions() {
        let mut rng = Rng(7);
        for raw in [
            json!({"attr": "count", "op": "gte", "value": 1}),
            json!({"attr": "a.b", "op": "eq", "value": "x"}),
            json!({"all": [{"attr": "n", "op": "gt", "value": 2}, {"attr": "k", "op": "in", "value": ["p", "q"]}]}),
        ] {
            let flow = crate::domain::parse_flow(&json!({"key": "f", "title": "F", "steps": [
                {"key": "s", "title": "S", "trigger": {"event": "e", "where": raw}}
            ]}))
            .unwrap();
            let condition = flow.steps[0].trigger.as_ref().unwrap().when.as_ref().unwrap();
            let properties = Value::Object(witness(condition, &mut rng));
            let fact = EventFact { id: "1".into(), name: "e".into(), properties, occurred_at: Utc::now(), actor: None };
            assert!(flow.steps[0].is_triggered_by(&fact), "{fact:?}");
        }
    }
}
