use super::*;

use chrono::TimeZone;
use serde_json::json;

use crate::domain::validation::parse_flow;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A flow built the only way a real one is: parsed and validated from JSON.
fn flow(steps: Value) -> FlowDefinition {
    parse_flow(&json!({"key": "onboarding", "title": "Onboarding", "steps": steps}))
        .unwrap_or_else(|problems| panic!("invalid test flow: {problems:#?}"))
}

/// Fixed instants, a minute apart.
fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 9, minute, 0).unwrap()
}

fn no_attributes() -> Value {
    json!({})
}

fn start_step(step: &str) -> Command {
    Command::StartStep { step: step.into() }
}

fn complete(step: &str) -> Command {
    Command::CompleteStep { step: step.into(), metadata: None }
}

fn complete_with(step: &str, metadata: Value) -> Command {
    Command::CompleteStep { step: step.into(), metadata: Some(metadata) }
}

fn skip(step: &str) -> Command {
    Command::SkipStep { step: step.into(), reason: None }
}

/// Recorded step states, as a view reads them.
fn recorded(entries: &[(&str, StepStatus)]) -> BTreeMap<String, StepState> {
    entries.iter().map(|(key, status)| (key.to_string(), StepState::new(*status, Source::User))).collect()
}

fn keys<'a>(view: &ProgressView<'a>) -> Vec<&'a str> {
    view.steps.iter().map(|s| s.definition.key.as_str()).collect()
}

fn step_view<'v, 'a>(view: &'v ProgressView<'a>, key: &str) -> &'v StepView<'a> {
    view.steps.iter().find(|s| s.definition.key == key).unwrap_or_else(|| panic!("`{key}` is not in the view"))
}

fn blocked_by(view: &ProgressView<'_>, key: &str) -> Vec<String> {
    step_view(view, key).blocked_by.clone()
}

fn next_key<'a>(view: &ProgressView<'a>) -> Option<&'a str> {
    view.next().map(|s| s.definition.key.as_str())
}

/// Applies a command that must succeed, as the subject.
#[track_caller]
fn run(
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &mut Enrollment,
    command: Command,
    now: DateTime<Utc>,
) -> Outcome {
    let described = format!("{command:?}");
    apply(flow, attributes, enrollment, command, Source::User, now)
        .unwrap_or_else(|e| panic!("{described} failed: {e}"))
}

/// Applies a command that must fail, as the subject.
#[track_caller]
fn refused(flow: &FlowDefinition, attributes: &Value, enrollment: &mut Enrollment, command: Command) -> ProgressError {
    let described = format!("{command:?}");
    match apply(flow, attributes, enrollment, command, Source::User, at(59)) {
        Ok(outcome) => panic!("{described} should fail, but did {outcome:?}"),
        Err(e) => e,
    }
}

fn changed(steps: &[&str], points_awarded: i64, completed: bool) -> Outcome {
    Outcome { changed: true, changed_steps: steps.iter().map(|s| s.to_string()).collect(), points_awarded, completed }
}

/// profile (required, 10 points), tour (optional, 5 points), invite (required, after
/// profile, 20 points).
fn basic_flow() -> FlowDefinition {
    flow(json!([
        {"key": "profile", "title": "Complete your profile", "points": 10},
        {"key": "tour", "title": "Take the tour", "required": false, "points": 5},
        {"key": "invite", "title": "Invite your team", "dependsOn": ["profile"], "points": 20}
    ]))
}

// ---------------------------------------------------------------------------------------
// view: applicability
// ---------------------------------------------------------------------------------------

#[test]
fn a_fresh_enrollment_starts_at_the_first_step() {
    let flow = basic_flow();
    let steps = BTreeMap::new();
    let view = view(&flow, &no_attributes(), &steps);
    assert_eq!(keys(&view), ["profile", "tour", "invite"]);
    assert!(view.steps.iter().all(|s| s.status == StepStatus::Pending && s.state.is_none()));
    assert_eq!((view.percent_complete, view.completed_count, view.total_count, view.position), (0, 0, 3, 1));
    assert_eq!(view.next_step, Some(0));
    assert_eq!(next_key(&view), Some("profile"));
    assert!(!view.required_done);
    assert!(step_view(&view, "profile").available);
    assert!(step_view(&view, "tour").available);
    assert!(!step_view(&view, "invite").available);
    assert_eq!(blocked_by(&view, "invite"), ["profile"]);
}

#[test]
fn the_view_carries_recorded_states() {
    let flow = basic_flow();
    let mut steps = recorded(&[("tour", StepStatus::Skipped)]);
    steps.get_mut("tour").unwrap().skip_reason = Some("seen it".into());
    let view = view(&flow, &no_attributes(), &steps);
    let tour = step_view(&view, "tour");
    assert_eq!(tour.status, StepStatus::Skipped);
    assert_eq!(tour.state.and_then(|s| s.skip_reason.as_deref()), Some("seen it"));
    assert_eq!(step_view(&view, "profile").state, None);
}

fn conditional_flow() -> FlowDefinition {
    flow(json!([
        {"key": "welcome", "title": "Welcome"},
        {"key": "invite", "title": "Invite your team", "condition": {"plan": "team"}},
        {"key": "import", "title": "Import data", "required": false,
         "condition": {"attr": "company.size", "op": "gt", "value": 10}},
        {"key": "finish", "title": "Finish"}
    ]))
}

#[test]
fn steps_whose_condition_fails_on_attributes_are_left_out() {
    let flow = conditional_flow();
    let steps = BTreeMap::new();

    let solo_big = json!({"plan": "solo", "company": {"size": 50}});
    let view_solo = view(&flow, &solo_big, &steps);
    assert_eq!(keys(&view_solo), ["welcome", "import", "finish"]);
    assert_eq!(view_solo.total_count, 3);

    let team_small = json!({"plan": "team", "company": {"size": 3}});
    let view_team = view(&flow, &team_small, &steps);
    assert_eq!(keys(&view_team), ["welcome", "invite", "finish"]);

    // Missing attributes make comparisons false: the conditional steps do not apply.
    let view_none = view(&flow, &no_attributes(), &steps);
    assert_eq!(keys(&view_none), ["welcome", "finish"]);
}

#[test]
fn steps_that_do_not_apply_are_left_out_of_every_count() {
    let flow = conditional_flow();
    // `invite` was completed while the subject was on the team plan; it no longer applies.
    let steps = recorded(&[("welcome", StepStatus::Completed), ("invite", StepStatus::Completed)]);
    let solo = json!({"plan": "solo"});
    let view = view(&flow, &solo, &steps);
    assert_eq!(keys(&view), ["welcome", "finish"]);
    assert_eq!(view.completed_count, 1, "the completed `invite` does not count");
    assert_eq!(view.total_count, 2);
    assert_eq!(view.percent_complete, 50, "required: welcome (done) and finish");
    assert_eq!(view.position, 2);
    assert_eq!(next_key(&view), Some("finish"));
}

#[test]
fn a_step_can_apply_depending_on_an_earlier_step_status() {
    let flow = flow(json!([
        {"key": "tour", "title": "Take the tour", "required": false},
        {"key": "help", "title": "Where to find help", "required": false,
         "condition": {"steps.tour.status": "SKIPPED"}}
    ]));
    let attrs = no_attributes();
    assert_eq!(keys(&view(&flow, &attrs, &BTreeMap::new())), ["tour"]);
    assert_eq!(keys(&view(&flow, &attrs, &recorded(&[("tour", StepStatus::Completed)]))), ["tour"]);
    assert_eq!(keys(&view(&flow, &attrs, &recorded(&[("tour", StepStatus::Skipped)]))), ["tour", "help"]);
}

// ---------------------------------------------------------------------------------------
// view: availability and blocked_by
// ---------------------------------------------------------------------------------------

#[test]
fn blocked_by_lists_unmet_dependencies_in_depends_on_order() {
    let flow = flow(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B"},
        {"key": "c", "title": "C"},
        {"key": "d", "title": "D", "dependsOn": ["c", "a", "b"]}
    ]));
    let attrs = no_attributes();
    let none = BTreeMap::new();
    let fresh = view(&flow, &attrs, &none);
    assert_eq!(blocked_by(&fresh, "d"), ["c", "a", "b"]);
    assert!(!step_view(&fresh, "d").available);

    let b_done = recorded(&[("b", StepStatus::Completed)]);
    assert_eq!(blocked_by(&view(&flow, &attrs, &b_done), "d"), ["c", "a"]);

    let all_done =
        recorded(&[("a", StepStatus::Completed), ("b", StepStatus::Completed), ("c", StepStatus::Completed)]);
    let unblocked = view(&flow, &attrs, &all_done);
    assert!(blocked_by(&unblocked, "d").is_empty());
    assert!(step_view(&unblocked, "d").available);
}

#[test]
fn a_dependency_that_does_not_apply_counts_as_met() {
    let flow = flow(json!([
        {"key": "invite", "title": "Invite", "condition": {"plan": "team"}},
        {"key": "share", "title": "Share", "dependsOn": ["invite"]}
    ]));
    let steps = BTreeMap::new();

    let solo = json!({"plan": "solo"});
    let view_solo = view(&flow, &solo, &steps);
    assert!(step_view(&view_solo, "share").available);
    assert!(blocked_by(&view_solo, "share").is_empty());

    let team = json!({"plan": "team"});
    let view_team = view(&flow, &team, &steps);
    assert!(!step_view(&view_team, "share").available);
    assert_eq!(blocked_by(&view_team, "share"), ["invite"]);
}

#[test]
fn completed_and_skipped_dependencies_are_met_but_started_ones_are_not() {
    let flow = flow(json!([
        {"key": "a", "title": "A", "required": false},
        {"key": "b", "title": "B", "required": false},
        {"key": "c", "title": "C", "required": false},
        {"key": "d", "title": "D", "dependsOn": ["a", "b", "c"]}
    ]));
    let steps = recorded(&[("a", StepStatus::Completed), ("b", StepStatus::Skipped), ("c", StepStatus::InProgress)]);
    let view = view(&flow, &no_attributes(), &steps);
    assert_eq!(blocked_by(&view, "d"), ["c"]);
    assert!(!step_view(&view, "d").available);
}

// ---------------------------------------------------------------------------------------
// view: counts, percent, position, next step
// ---------------------------------------------------------------------------------------

fn three_required_one_optional() -> FlowDefinition {
    flow(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B"},
        {"key": "extra", "title": "Extra", "required": false},
        {"key": "c", "title": "C"}
    ]))
}

#[test]
fn percent_complete_rounds_down_over_required_steps_only() {
    let flow = three_required_one_optional();
    let attrs = no_attributes();
    let percent = |entries: &[(&str, StepStatus)]| view(&flow, &attrs, &recorded(entries)).percent_complete;
    use StepStatus::*;
    assert_eq!(percent(&[]), 0);
    assert_eq!(percent(&[("a", Completed)]), 33, "1/3 rounds down");
    assert_eq!(percent(&[("a", Completed), ("b", Completed)]), 66, "2/3 rounds down, not up to 67");
    assert_eq!(percent(&[("extra", Completed)]), 0, "an optional step does not move the percentage");
    assert_eq!(percent(&[("a", InProgress), ("b", Skipped)]), 0, "only completed steps count");
    assert_eq!(percent(&[("a", Completed), ("b", Completed), ("c", Completed)]), 100);
}

#[test]
fn required_done_needs_every_applicable_required_step_completed() {
    let flow = three_required_one_optional();
    let attrs = no_attributes();
    use StepStatus::*;
    let done = |entries: &[(&str, StepStatus)]| view(&flow, &attrs, &recorded(entries)).required_done;
    assert!(!done(&[("a", Completed), ("b", Completed), ("extra", Completed)]));
    assert!(done(&[("a", Completed), ("b", Completed), ("c", Completed)]), "the optional step may stay pending");
}

#[test]
fn percent_complete_is_100_when_no_required_step_applies() {
    let optional_only = flow(json!([
        {"key": "a", "title": "A", "required": false},
        {"key": "b", "title": "B", "required": false}
    ]));
    let none = BTreeMap::new();
    let view_optional = view(&optional_only, &no_attributes(), &none);
    assert_eq!(view_optional.percent_complete, 100);
    assert!(view_optional.required_done);
    assert_eq!((view_optional.completed_count, view_optional.total_count), (0, 2));

    let required_for_teams = flow(json!([
        {"key": "a", "title": "A", "required": false},
        {"key": "b", "title": "B", "condition": {"plan": "team"}}
    ]));
    let solo = json!({"plan": "solo"});
    let view_solo = view(&required_for_teams, &solo, &none);
    assert_eq!(view_solo.percent_complete, 100);
    assert!(view_solo.required_done);
    let team = json!({"plan": "team"});
    assert_eq!(view(&required_for_teams, &team, &none).percent_complete, 0);
}

#[test]
fn completed_count_and_total_count_cover_every_applicable_step() {
    let flow = three_required_one_optional();
    use StepStatus::*;
    let steps = recorded(&[("a", Completed), ("extra", Completed), ("b", Skipped), ("c", InProgress)]);
    let view = view(&flow, &no_attributes(), &steps);
    assert_eq!(view.completed_count, 2, "required and optional completed steps; skipped ones are not completed");
    assert_eq!(view.total_count, 4);
}

#[test]
fn position_is_the_one_based_index_of_the_next_step() {
    let flow = three_required_one_optional();
    let attrs = no_attributes();
    use StepStatus::*;

    let steps = recorded(&[("a", Completed), ("b", Completed)]);
    let view_third = view(&flow, &attrs, &steps);
    assert_eq!((view_third.next_step, view_third.position), (Some(2), 3));
    assert_eq!(next_key(&view_third), Some("extra"));

    let steps = recorded(&[("a", Completed), ("b", Completed), ("extra", Skipped)]);
    let view_fourth = view(&flow, &attrs, &steps);
    assert_eq!((view_fourth.next_step, view_fourth.position), (Some(3), 4));
}

#[test]
fn position_is_total_count_when_nothing_is_left() {
    let flow = three_required_one_optional();
    use StepStatus::*;
    let steps = recorded(&[("a", Completed), ("b", Completed), ("extra", Skipped), ("c", Completed)]);
    let view = view(&flow, &no_attributes(), &steps);
    assert_eq!(view.next_step, None);
    assert!(view.next().is_none());
    assert_eq!(view.position, view.total_count);
    assert_eq!(view.position, 4);
}

#[test]
fn position_counts_applicable_steps_only() {
    let flow = conditional_flow();
    let steps = recorded(&[("welcome", StepStatus::Completed)]);
    // Applicable: welcome, finish. `finish` is 2nd of 2, although 4th in the definition.
    let solo = json!({"plan": "solo"});
    let view = view(&flow, &solo, &steps);
    assert_eq!((view.position, view.total_count), (2, 2));
    assert_eq!(view.next_step, Some(1));
    assert_eq!(next_key(&view), Some("finish"));
}

#[test]
fn next_step_is_the_first_applicable_available_unfinished_step() {
    let flow = flow(json!([
        {"key": "intro", "title": "Intro", "required": false},
        {"key": "team_only", "title": "Team", "condition": {"plan": "team"}},
        {"key": "profile", "title": "Profile"},
        {"key": "invite", "title": "Invite", "dependsOn": ["profile"]},
        {"key": "tour", "title": "Tour", "required": false}
    ]));
    let solo = json!({"plan": "solo"});
    use StepStatus::*;

    // A started step is still the next step: it is not finished.
    let steps = recorded(&[("intro", Skipped), ("profile", InProgress)]);
    assert_eq!(next_key(&view(&flow, &solo, &steps)), Some("profile"));

    // Skipped and completed steps are passed over, as is a step that does not apply.
    let steps = recorded(&[("intro", Skipped), ("profile", Completed)]);
    let v = view(&flow, &solo, &steps);
    assert_eq!(next_key(&v), Some("invite"));
    assert_eq!(v.position, 3, "intro, profile, invite: the 3rd applicable step");

    // Display order decides, not what is required.
    let steps = recorded(&[("profile", Completed), ("invite", Completed)]);
    assert_eq!(next_key(&view(&flow, &solo, &steps)), Some("intro"));

    let steps = recorded(&[("intro", Completed), ("profile", Completed), ("invite", Completed)]);
    assert_eq!(next_key(&view(&flow, &solo, &steps)), Some("tour"));
}

// ---------------------------------------------------------------------------------------
// apply: step transitions
// ---------------------------------------------------------------------------------------

#[test]
fn completing_a_step_records_it_and_awards_its_points() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));

    let outcome = run(&flow, &attrs, &mut enrollment, complete_with("profile", json!({"name": "Ada"})), at(1));

    assert_eq!(outcome, changed(&["profile"], 10, false));
    assert_eq!(
        enrollment.steps["profile"],
        StepState {
            status: StepStatus::Completed,
            started_at: Some(at(1)),
            completed_at: Some(at(1)),
            skipped_at: None,
            skip_reason: None,
            metadata: Some(json!({"name": "Ada"})),
            source: Source::User,
            event_id: None,
            completed_by: None,
            available_at: None,
        }
    );
    assert_eq!(enrollment.points, 10);
    assert_eq!(enrollment.revision, 2);
    assert_eq!(enrollment.last_activity_at, at(1));
    assert_eq!(enrollment.started_at, at(0));
    assert_eq!(enrollment.status, EnrollmentStatus::InProgress);
    assert_eq!(enrollment.completed_at, None);
    assert_eq!(enrollment.steps.len(), 1, "no other step gets a record");
}

#[test]
fn starting_a_step_marks_it_in_progress_and_keeps_the_start_time() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));

    let outcome = run(&flow, &attrs, &mut enrollment, start_step("profile"), at(1));
    assert_eq!(outcome, changed(&["profile"], 0, false));
    let state = &enrollment.steps["profile"];
    assert_eq!((state.status, state.started_at, state.completed_at), (StepStatus::InProgress, Some(at(1)), None));
    assert_eq!(enrollment.points, 0, "starting awards nothing");

    run(&flow, &attrs, &mut enrollment, complete("profile"), at(5));
    let state = &enrollment.steps["profile"];
    assert_eq!((state.status, state.started_at, state.completed_at), (StepStatus::Completed, Some(at(1)), Some(at(5))));
}

#[test]
fn skipping_an_optional_step_records_when_and_why() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));

    let outcome = run(
        &flow,
        &attrs,
        &mut enrollment,
        Command::SkipStep { step: "tour".into(), reason: Some("seen it before".into()) },
        at(2),
    );

    assert_eq!(outcome, changed(&["tour"], 0, false));
    let state = &enrollment.steps["tour"];
    assert_eq!(state.status, StepStatus::Skipped);
    assert_eq!(state.skipped_at, Some(at(2)));
    assert_eq!(state.skip_reason.as_deref(), Some("seen it before"));
    assert_eq!((state.started_at, state.completed_at), (None, None));
    assert_eq!(enrollment.points, 0, "skipping awards nothing");
    assert_eq!(enrollment.revision, 2);
}

#[test]
fn starting_a_skipped_step_reopens_it() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, Command::SkipStep { step: "tour".into(), reason: Some("later".into()) }, at(1));

    let outcome = run(&flow, &attrs, &mut enrollment, start_step("tour"), at(2));

    assert_eq!(outcome, changed(&["tour"], 0, false));
    let state = &enrollment.steps["tour"];
    assert_eq!(state.status, StepStatus::InProgress);
    assert_eq!(state.started_at, Some(at(2)));
    assert_eq!((state.skipped_at, state.skip_reason.as_deref()), (None, None));
}

#[test]
fn completing_a_skipped_step_clears_the_skip_and_awards_points() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, Command::SkipStep { step: "tour".into(), reason: Some("later".into()) }, at(1));

    let outcome = run(&flow, &attrs, &mut enrollment, complete("tour"), at(2));

    assert_eq!(outcome, changed(&["tour"], 5, false));
    let state = &enrollment.steps["tour"];
    assert_eq!(state.status, StepStatus::Completed);
    assert_eq!(state.completed_at, Some(at(2)));
    assert_eq!((state.skipped_at, state.skip_reason.as_deref()), (None, None));
    assert_eq!(enrollment.points, 5);
}

#[test]
fn the_source_of_the_last_change_is_recorded() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    apply(&flow, &attrs, &mut enrollment, start_step("profile"), Source::User, at(1)).unwrap();
    assert_eq!(enrollment.steps["profile"].source, Source::User);
    apply(&flow, &attrs, &mut enrollment, complete("profile"), Source::Event, at(2)).unwrap();
    assert_eq!(enrollment.steps["profile"].source, Source::Event);
    apply(&flow, &attrs, &mut enrollment, skip("tour"), Source::Admin, at(3)).unwrap();
    assert_eq!(enrollment.steps["tour"].source, Source::Admin);
    // A repeat by someone else changes nothing, the source included.
    apply(&flow, &attrs, &mut enrollment, complete("profile"), Source::Admin, at(4)).unwrap();
    assert_eq!(enrollment.steps["profile"].source, Source::Event);
}

#[test]
fn a_step_whose_dependency_does_not_apply_can_be_completed() {
    let flow = flow(json!([
        {"key": "invite", "title": "Invite", "condition": {"plan": "team"}},
        {"key": "share", "title": "Share", "dependsOn": ["invite"]}
    ]));
    let solo = json!({"plan": "solo"});
    let mut enrollment = Enrollment::new(at(0));
    let outcome = run(&flow, &solo, &mut enrollment, complete("share"), at(1));
    assert_eq!(outcome, changed(&["share"], 0, true));
}

// ---------------------------------------------------------------------------------------
// apply: errors
// ---------------------------------------------------------------------------------------

#[test]
fn a_step_the_flow_does_not_have_is_not_found() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    for command in [start_step("nope"), complete("nope"), skip("nope")] {
        assert_eq!(refused(&flow, &attrs, &mut enrollment, command), ProgressError::StepNotFound("nope".into()));
    }
    assert_eq!(ProgressError::StepNotFound("nope".into()).to_string(), "the flow has no step `nope`");
}

#[test]
fn a_step_that_does_not_apply_cannot_be_acted_on() {
    let flow = conditional_flow();
    let solo = json!({"plan": "solo"});
    let mut enrollment = Enrollment::new(at(0));
    for command in [start_step("invite"), complete("invite"), skip("invite")] {
        assert_eq!(refused(&flow, &solo, &mut enrollment, command), ProgressError::StepNotApplicable("invite".into()));
    }
    assert_eq!(
        ProgressError::StepNotApplicable("invite".into()).to_string(),
        "step `invite` does not apply to this subject"
    );
}

#[test]
fn a_locked_step_says_what_it_waits_for() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    let locked = ProgressError::StepLocked { step: "invite".into(), blocked_by: vec!["profile".into()] };
    assert_eq!(refused(&flow, &attrs, &mut enrollment, complete("invite")), locked);
    assert_eq!(refused(&flow, &attrs, &mut enrollment, start_step("invite")), locked);
    assert_eq!(locked.to_string(), "step `invite` is locked until profile is finished");

    // Starting the dependency is not enough; finishing it unlocks.
    run(&flow, &attrs, &mut enrollment, start_step("profile"), at(1));
    assert_eq!(refused(&flow, &attrs, &mut enrollment, complete("invite")), locked);
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(2));
    run(&flow, &attrs, &mut enrollment, complete("invite"), at(3));
    assert_eq!(enrollment.step_status("invite"), StepStatus::Completed);
}

#[test]
fn a_step_locked_by_several_dependencies_lists_them_in_order() {
    let flow = flow(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B"},
        {"key": "c", "title": "C", "dependsOn": ["b", "a"]}
    ]));
    let mut enrollment = Enrollment::new(at(0));
    let error = refused(&flow, &no_attributes(), &mut enrollment, complete("c"));
    assert_eq!(error, ProgressError::StepLocked { step: "c".into(), blocked_by: vec!["b".into(), "a".into()] });
    assert_eq!(error.to_string(), "step `c` is locked until b, a are finished");
}

#[test]
fn a_required_step_cannot_be_skipped() {
    let flow = basic_flow();
    let mut enrollment = Enrollment::new(at(0));
    let error = refused(&flow, &no_attributes(), &mut enrollment, skip("profile"));
    assert_eq!(error, ProgressError::StepNotSkippable("profile".into()));
    assert_eq!(error.to_string(), "step `profile` cannot be skipped");
}

#[test]
fn an_optional_step_marked_not_skippable_cannot_be_skipped() {
    // Skippability is its own flag: optional only means completion does not wait for it.
    let flow = flow(json!([
        {"key": "a", "title": "A"},
        {"key": "survey", "title": "Survey", "required": false, "skippable": false}
    ]));
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    assert_eq!(
        refused(&flow, &attrs, &mut enrollment, skip("survey")),
        ProgressError::StepNotSkippable("survey".into())
    );
    // And it does not hold completion back.
    assert!(run(&flow, &attrs, &mut enrollment, complete("a"), at(1)).completed);
}

#[test]
fn repeating_a_skip_of_an_already_skipped_unskippable_step_is_not_an_error() {
    // A step skipped while it was skippable (under an earlier version of the flow, say)
    // keeps answering a repeated skip with "nothing to do" rather than an error.
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    enrollment.steps.insert("profile".into(), StepState::new(StepStatus::Skipped, Source::User));
    let snapshot = enrollment.clone();
    assert_eq!(run(&flow, &attrs, &mut enrollment, skip("profile"), at(1)), Outcome::default());
    assert_eq!(enrollment, snapshot);
}

#[test]
fn step_checks_run_in_order_found_applicable_skippable_unlocked() {
    let flow = flow(json!([
        {"key": "a", "title": "A"},
        {"key": "team", "title": "Team", "condition": {"plan": "team"}, "dependsOn": ["a"]},
        {"key": "must", "title": "Must", "dependsOn": ["a"]},
        {"key": "may", "title": "May", "required": false, "dependsOn": ["a"]}
    ]));
    let solo = json!({"plan": "solo"});
    let mut enrollment = Enrollment::new(at(0));
    // `team` does not apply, cannot be skipped and would be locked: not applicable wins.
    assert_eq!(refused(&flow, &solo, &mut enrollment, skip("team")), ProgressError::StepNotApplicable("team".into()));
    // `must` cannot be skipped and is locked: not skippable wins.
    assert_eq!(refused(&flow, &solo, &mut enrollment, skip("must")), ProgressError::StepNotSkippable("must".into()));
    // `may` can be skipped, but only once unlocked.
    assert_eq!(
        refused(&flow, &solo, &mut enrollment, skip("may")),
        ProgressError::StepLocked { step: "may".into(), blocked_by: vec!["a".into()] }
    );
    run(&flow, &solo, &mut enrollment, complete("a"), at(1));
    run(&flow, &solo, &mut enrollment, skip("may"), at(2));
    assert_eq!(enrollment.step_status("may"), StepStatus::Skipped);
}

#[test]
fn a_refused_command_leaves_the_enrollment_untouched() {
    let flow = conditional_flow();
    let team = json!({"plan": "team"});
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &team, &mut enrollment, start_step("welcome"), at(1));
    let before = enrollment.clone();
    let solo = json!({"plan": "solo"});
    for (attrs, command) in [
        (&team, complete("missing")),
        (&solo, complete("invite")),
        (&team, skip("welcome")),
        (&team, Command::SkipStep { step: "finish".into(), reason: Some("no".into()) }),
    ] {
        refused(&flow, attrs, &mut enrollment, command);
        assert_eq!(enrollment, before);
    }
}

// ---------------------------------------------------------------------------------------
// apply: idempotency and points
// ---------------------------------------------------------------------------------------

#[test]
fn repeating_a_completion_changes_nothing() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete_with("profile", json!({"v": 1})), at(1));
    let after_first = enrollment.clone();

    let outcome = run(&flow, &attrs, &mut enrollment, complete_with("profile", json!({"v": 2})), at(2));

    assert_eq!(outcome, Outcome::default(), "no change, no points, no completion");
    // Same revision, same activity time, same points, same step record (metadata included).
    assert_eq!(enrollment, after_first);
    assert_eq!(enrollment.revision, 2);
}

#[test]
fn repeating_a_skip_or_a_start_changes_nothing() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, skip("tour"), at(1));
    run(&flow, &attrs, &mut enrollment, start_step("profile"), at(2));
    let snapshot = enrollment.clone();

    assert_eq!(run(&flow, &attrs, &mut enrollment, skip("tour"), at(3)), Outcome::default());
    assert_eq!(run(&flow, &attrs, &mut enrollment, start_step("profile"), at(4)), Outcome::default());
    assert_eq!(enrollment, snapshot);
}

#[test]
fn a_completed_step_is_not_reopened_by_start() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(1));
    let snapshot = enrollment.clone();

    assert_eq!(run(&flow, &attrs, &mut enrollment, start_step("profile"), at(2)), Outcome::default());
    assert_eq!(enrollment, snapshot);
    assert_eq!(enrollment.step_status("profile"), StepStatus::Completed);
}

#[test]
fn skipping_a_completed_step_is_refused() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(1));
    run(&flow, &attrs, &mut enrollment, complete("tour"), at(2));
    let snapshot = enrollment.clone();

    let error = refused(&flow, &attrs, &mut enrollment, skip("tour"));
    assert_eq!(error, ProgressError::StepAlreadyCompleted("tour".into()));
    assert_eq!(error.to_string(), "step `tour` is already completed and cannot be skipped");
    // A required step is refused for not being skippable first: that check comes earlier.
    assert_eq!(
        refused(&flow, &attrs, &mut enrollment, skip("profile")),
        ProgressError::StepNotSkippable("profile".into())
    );
    assert_eq!(enrollment, snapshot);
    assert_eq!(enrollment.step_status("tour"), StepStatus::Completed);
}

#[test]
fn skipping_a_completed_step_is_refused_even_when_it_is_locked_again() {
    let flow = flow(json!([
        {"key": "invite", "title": "Invite", "condition": {"plan": "team"}},
        {"key": "share", "title": "Share", "required": false, "dependsOn": ["invite"]}
    ]));
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &json!({"plan": "solo"}), &mut enrollment, complete("share"), at(1));
    // On the team plan `share` waits for `invite` again, but what it says is that it is done.
    let team = json!({"plan": "team"});
    assert_eq!(
        refused(&flow, &team, &mut enrollment, skip("share")),
        ProgressError::StepAlreadyCompleted("share".into())
    );
}

#[test]
fn points_are_awarded_once_per_step() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    let awarded = |outcome: Outcome| outcome.points_awarded;

    assert_eq!(awarded(run(&flow, &attrs, &mut enrollment, complete("profile"), at(1))), 10);
    assert_eq!(awarded(run(&flow, &attrs, &mut enrollment, complete("profile"), at(2))), 0);
    assert_eq!(awarded(run(&flow, &attrs, &mut enrollment, start_step("profile"), at(3))), 0);
    assert_eq!(awarded(run(&flow, &attrs, &mut enrollment, complete("tour"), at(4))), 5);
    assert_eq!(awarded(run(&flow, &attrs, &mut enrollment, complete("invite"), at(5))), 20);
    assert_eq!(awarded(run(&flow, &attrs, &mut enrollment, complete("invite"), at(6))), 0);
    assert_eq!(enrollment.points, 35);
}

#[test]
fn a_completed_step_relocked_by_an_attribute_change_can_still_be_repeated() {
    let flow = flow(json!([
        {"key": "invite", "title": "Invite", "condition": {"plan": "team"}},
        {"key": "share", "title": "Share", "dependsOn": ["invite"]}
    ]));
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &json!({"plan": "solo"}), &mut enrollment, complete("share"), at(1));
    let snapshot = enrollment.clone();

    // On the team plan `invite` applies and is pending, so `share` is locked again...
    let team = json!({"plan": "team"});
    assert_eq!(blocked_by(&view(&flow, &team, &enrollment.steps), "share"), ["invite"]);
    // ...but repeating what was already done is not an error, and changes nothing.
    assert_eq!(run(&flow, &team, &mut enrollment, complete("share"), at(2)), Outcome::default());
    assert_eq!(run(&flow, &team, &mut enrollment, start_step("share"), at(3)), Outcome::default());
    assert_eq!(enrollment, snapshot);
}

// ---------------------------------------------------------------------------------------
// apply: enrollment completion
// ---------------------------------------------------------------------------------------

#[test]
fn the_enrollment_completes_with_its_last_required_step() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    assert!(!run(&flow, &attrs, &mut enrollment, complete("profile"), at(1)).completed);
    assert_eq!(enrollment.status, EnrollmentStatus::InProgress);

    // `tour` is optional and still pending: it does not hold completion back.
    let outcome = run(&flow, &attrs, &mut enrollment, complete("invite"), at(2));

    assert_eq!(outcome, changed(&["invite"], 20, true));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(2)));
    assert_eq!(enrollment.revision, 3, "a step change and completion in one command is one revision");
}

#[test]
fn the_enrollment_completes_exactly_once_and_completed_at_never_moves() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(1));
    assert!(run(&flow, &attrs, &mut enrollment, complete("invite"), at(2)).completed);

    // An optional step done afterwards is recorded, but completion does not happen again.
    let outcome = run(&flow, &attrs, &mut enrollment, complete("tour"), at(3));
    assert_eq!(outcome, changed(&["tour"], 5, false));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(2)));
    assert_eq!(enrollment.last_activity_at, at(3));
    assert_eq!(enrollment.revision, 4);

    // Neither Start nor Reconcile reopens or re-completes a completed enrollment, and it
    // cannot be dismissed any more.
    let snapshot = enrollment.clone();
    assert_eq!(run(&flow, &attrs, &mut enrollment, Command::Start, at(4)), Outcome::default());
    assert_eq!(run(&flow, &attrs, &mut enrollment, Command::Reconcile, at(5)), Outcome::default());
    assert_eq!(refused(&flow, &attrs, &mut enrollment, Command::SkipFlow), ProgressError::FlowAlreadyCompleted);
    assert_eq!(enrollment, snapshot);
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!((enrollment.completed_at, enrollment.skipped_at), (Some(at(2)), None));
    assert_eq!(enrollment.revision, 4);
}

#[test]
fn a_completed_flow_cannot_be_skipped() {
    let flow = flow(json!([{"key": "a", "title": "A"}]));
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete("a"), at(1));
    let error = refused(&flow, &attrs, &mut enrollment, Command::SkipFlow);
    assert_eq!(error, ProgressError::FlowAlreadyCompleted);
    assert_eq!(error.to_string(), "the flow is already completed and cannot be skipped");
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.skipped_at, None);
}

#[test]
fn a_completed_enrollment_stays_completed_when_a_new_required_step_starts_to_apply() {
    let flow = conditional_flow();
    let solo = json!({"plan": "solo"});
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &solo, &mut enrollment, complete("welcome"), at(1));
    assert!(run(&flow, &solo, &mut enrollment, complete("finish"), at(2)).completed);

    // On the team plan `invite` (required) applies and is pending.
    let team = json!({"plan": "team"});
    assert!(!view(&flow, &team, &enrollment.steps).required_done);
    assert_eq!(run(&flow, &team, &mut enrollment, Command::Reconcile, at(3)), Outcome::default());
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(2)));
}

#[test]
fn reconcile_completes_when_an_attribute_change_removes_the_last_required_step() {
    let flow = flow(json!([
        {"key": "welcome", "title": "Welcome"},
        {"key": "invite", "title": "Invite your team", "condition": {"plan": "team"}}
    ]));
    let team = json!({"plan": "team"});
    let mut enrollment = Enrollment::new(at(0));
    assert!(!run(&flow, &team, &mut enrollment, complete("welcome"), at(1)).completed);
    assert_eq!(enrollment.revision, 2);

    let solo = json!({"plan": "solo"});
    let outcome = run(&flow, &solo, &mut enrollment, Command::Reconcile, at(2));

    assert_eq!(outcome, changed(&[], 0, true));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(2)));
    assert_eq!(enrollment.revision, 3);
    assert_eq!(enrollment.last_activity_at, at(2));

    // Reconciling again finds nothing to do.
    assert_eq!(run(&flow, &solo, &mut enrollment, Command::Reconcile, at(3)), Outcome::default());
    assert_eq!(enrollment.revision, 3);
    assert_eq!(enrollment.completed_at, Some(at(2)));
}

#[test]
fn reconcile_without_any_change_does_nothing() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(1));
    let snapshot = enrollment.clone();
    assert_eq!(run(&flow, &attrs, &mut enrollment, Command::Reconcile, at(2)), Outcome::default());
    assert_eq!(enrollment, snapshot);
}

#[test]
fn attributes_changed_moves_the_revision_by_one_but_not_the_activity_time() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(1));
    let before = enrollment.clone();

    // Nothing the flow reads changed, but the snapshot is new all the same.
    let outcome = attributes_changed(&flow, &json!({"plan": "team"}), &mut enrollment, at(2));

    assert_eq!(outcome, changed(&[], 0, false));
    assert_eq!(enrollment.revision, before.revision + 1);
    assert_eq!(enrollment.last_activity_at, at(1), "an attribute change is not the subject's activity");
    assert_eq!(Enrollment { revision: before.revision, ..enrollment.clone() }, before, "nothing else moved");

    attributes_changed(&flow, &attrs, &mut enrollment, at(3));
    assert_eq!(enrollment.revision, before.revision + 2);
}

#[test]
fn attributes_changed_completes_when_the_last_required_step_stops_applying() {
    let flow = flow(json!([
        {"key": "welcome", "title": "Welcome"},
        {"key": "invite", "title": "Invite your team", "condition": {"plan": "team"}}
    ]));
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &json!({"plan": "team"}), &mut enrollment, complete("welcome"), at(1));
    assert_eq!(enrollment.revision, 2);

    let outcome = attributes_changed(&flow, &json!({"plan": "solo"}), &mut enrollment, at(2));

    assert_eq!(outcome, changed(&[], 0, true));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(2)));
    assert_eq!(enrollment.revision, 3, "completing and the new snapshot are one revision");
    assert_eq!(enrollment.last_activity_at, at(1));
}

#[test]
fn attributes_changed_never_moves_completed_at() {
    let flow = flow(json!([{"key": "a", "title": "A"}, {"key": "b", "title": "B", "condition": {"plan": "team"}}]));
    let solo = json!({"plan": "solo"});
    let mut enrollment = Enrollment::new(at(0));
    assert!(run(&flow, &solo, &mut enrollment, complete("a"), at(1)).completed);

    let outcome = attributes_changed(&flow, &json!({"plan": "team"}), &mut enrollment, at(2));
    assert_eq!(outcome, changed(&[], 0, false));
    let outcome = attributes_changed(&flow, &solo, &mut enrollment, at(3));
    assert_eq!(outcome, changed(&[], 0, false));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(1)));
    assert_eq!(enrollment.revision, 4);
}

#[test]
fn a_flow_with_no_applicable_required_step_completes_on_the_first_command() {
    // Nothing is required of the subject, so there is nothing left to wait for.
    let flow = flow(json!([{"key": "tour", "title": "Tour", "required": false}]));
    let mut enrollment = Enrollment::new(at(0));
    let outcome = run(&flow, &no_attributes(), &mut enrollment, Command::Start, at(1));
    assert_eq!(outcome, changed(&[], 0, true));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(1)));
}

// ---------------------------------------------------------------------------------------
// apply: dismissing and resuming the flow
// ---------------------------------------------------------------------------------------

#[test]
fn skipping_the_flow_dismisses_it_once() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));

    let outcome = run(&flow, &attrs, &mut enrollment, Command::SkipFlow, at(1));
    assert_eq!(outcome, changed(&[], 0, false));
    assert_eq!(enrollment.status, EnrollmentStatus::Skipped);
    assert_eq!(enrollment.skipped_at, Some(at(1)));
    assert_eq!(enrollment.revision, 2);

    let snapshot = enrollment.clone();
    assert_eq!(run(&flow, &attrs, &mut enrollment, Command::SkipFlow, at(2)), Outcome::default());
    assert_eq!(enrollment, snapshot, "skipped_at stays at the first dismissal");
}

#[test]
fn completing_a_step_of_a_skipped_flow_resumes_it_and_can_complete_it() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, Command::SkipFlow, at(1));

    let outcome = run(&flow, &attrs, &mut enrollment, complete("profile"), at(2));
    assert_eq!(outcome, changed(&["profile"], 10, false));
    assert_eq!(enrollment.status, EnrollmentStatus::InProgress);
    assert_eq!(enrollment.skipped_at, None);
    assert_eq!(enrollment.revision, 3);

    run(&flow, &attrs, &mut enrollment, Command::SkipFlow, at(3));
    let outcome = run(&flow, &attrs, &mut enrollment, complete("invite"), at(4));
    assert_eq!(outcome, changed(&["invite"], 20, true));
    assert_eq!(enrollment.status, EnrollmentStatus::Completed);
    assert_eq!(enrollment.completed_at, Some(at(4)));
    assert_eq!(enrollment.skipped_at, None);
    assert_eq!(enrollment.revision, 5);
}

#[test]
fn starting_or_skipping_a_step_of_a_skipped_flow_resumes_it() {
    let flow = basic_flow();
    let attrs = no_attributes();
    for command in [start_step("profile"), skip("tour")] {
        let mut enrollment = Enrollment::new(at(0));
        run(&flow, &attrs, &mut enrollment, Command::SkipFlow, at(1));
        run(&flow, &attrs, &mut enrollment, command, at(2));
        assert_eq!((enrollment.status, enrollment.skipped_at), (EnrollmentStatus::InProgress, None));
        assert_eq!(enrollment.revision, 3);
    }
}

#[test]
fn start_resumes_a_skipped_flow_and_is_a_no_op_otherwise() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));

    assert_eq!(run(&flow, &attrs, &mut enrollment, Command::Start, at(1)), Outcome::default());
    assert_eq!(enrollment, Enrollment::new(at(0)), "starting an enrollment in progress changes nothing");

    run(&flow, &attrs, &mut enrollment, Command::SkipFlow, at(2));
    let outcome = run(&flow, &attrs, &mut enrollment, Command::Start, at(3));
    assert_eq!(outcome, changed(&[], 0, false));
    assert_eq!(enrollment.status, EnrollmentStatus::InProgress);
    assert_eq!(enrollment.skipped_at, None);
    assert_eq!(enrollment.revision, 3);
    assert_eq!(enrollment.last_activity_at, at(3));
    assert_eq!(enrollment.started_at, at(0), "resuming is not re-enrolling");
}

// ---------------------------------------------------------------------------------------
// apply: revision and activity bookkeeping
// ---------------------------------------------------------------------------------------

#[test]
fn the_revision_bumps_by_exactly_one_per_effective_command() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    assert_eq!(enrollment.revision, 1);

    let steps: [(Command, i64); 10] = [
        (Command::Start, 1),        // nothing to do
        (start_step("profile"), 2), // step started
        (start_step("profile"), 2), // repeat
        (complete("profile"), 3),   // step completed
        (Command::SkipFlow, 4),     // flow dismissed
        (skip("tour"), 5),          // step skipped, flow resumed: one revision
        (skip("tour"), 5),          // repeat
        (Command::Reconcile, 5),    // nothing to do
        (complete("invite"), 6),    // step completed, enrollment completed: one revision
        (complete("tour"), 7),      // optional step after completion
    ];
    for (minute, (command, revision)) in steps.into_iter().enumerate() {
        let described = format!("{command:?}");
        run(&flow, &attrs, &mut enrollment, command, at(minute as u32 + 1));
        assert_eq!(enrollment.revision, revision, "after {described}");
    }
    // A refused command does not bump it either.
    refused(&flow, &attrs, &mut enrollment, complete("nope"));
    assert_eq!(enrollment.revision, 7);
}

#[test]
fn last_activity_moves_only_when_something_changes() {
    let flow = basic_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    assert_eq!(enrollment.last_activity_at, at(0));

    run(&flow, &attrs, &mut enrollment, Command::Start, at(1));
    assert_eq!(enrollment.last_activity_at, at(0), "a no-op Start");
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(2));
    assert_eq!(enrollment.last_activity_at, at(2));
    run(&flow, &attrs, &mut enrollment, complete("profile"), at(3));
    assert_eq!(enrollment.last_activity_at, at(2), "a repeated completion");
    run(&flow, &attrs, &mut enrollment, Command::Reconcile, at(4));
    assert_eq!(enrollment.last_activity_at, at(2), "a no-op Reconcile");
    refused(&flow, &attrs, &mut enrollment, complete("nope"));
    assert_eq!(enrollment.last_activity_at, at(2), "a refused command");
    run(&flow, &attrs, &mut enrollment, skip("tour"), at(5));
    assert_eq!(enrollment.last_activity_at, at(5));
}

// ---------------------------------------------------------------------------------------
// Branching on an earlier answer
// ---------------------------------------------------------------------------------------

/// `api_key` applies only to developers, as answered in the `role` step.
fn branching_flow() -> FlowDefinition {
    flow(json!([
        {"key": "role", "title": "What is your role?"},
        {"key": "api_key", "title": "Create an API key", "condition": {"steps.role.metadata.role": "developer"}},
        {"key": "invite", "title": "Invite your team", "dependsOn": ["role"]}
    ]))
}

#[test]
fn a_branch_step_does_not_apply_before_the_answer_is_given() {
    let flow = branching_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    assert_eq!(keys(&view(&flow, &attrs, &enrollment.steps)), ["role", "invite"]);
    assert_eq!(
        refused(&flow, &attrs, &mut enrollment, complete("api_key")),
        ProgressError::StepNotApplicable("api_key".into())
    );
    // Starting the answering step gives no answer yet.
    run(&flow, &attrs, &mut enrollment, start_step("role"), at(1));
    assert_eq!(keys(&view(&flow, &attrs, &enrollment.steps)), ["role", "invite"]);
}

#[test]
fn answering_developer_adds_the_branch_step_and_holds_completion_for_it() {
    let flow = branching_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete_with("role", json!({"role": "developer"})), at(1));

    let progress = view(&flow, &attrs, &enrollment.steps);
    assert_eq!(keys(&progress), ["role", "api_key", "invite"]);
    assert_eq!((progress.completed_count, progress.total_count, progress.percent_complete), (1, 3, 33));
    assert_eq!(next_key(&progress), Some("api_key"));
    assert_eq!(progress.position, 2);

    assert!(!run(&flow, &attrs, &mut enrollment, complete("invite"), at(2)).completed);
    assert!(run(&flow, &attrs, &mut enrollment, complete("api_key"), at(3)).completed);
    assert_eq!(enrollment.completed_at, Some(at(3)));
}

#[test]
fn answering_another_role_leaves_the_branch_step_out() {
    let flow = branching_flow();
    let attrs = no_attributes();
    let mut enrollment = Enrollment::new(at(0));
    run(&flow, &attrs, &mut enrollment, complete_with("role", json!({"role": "designer"})), at(1));

    let progress = view(&flow, &attrs, &enrollment.steps);
    assert_eq!(keys(&progress), ["role", "invite"]);
    assert_eq!((progress.completed_count, progress.total_count, progress.percent_complete), (1, 2, 50));
    assert_eq!(
        refused(&flow, &attrs, &mut enrollment, complete("api_key")),
        ProgressError::StepNotApplicable("api_key".into())
    );
    assert!(run(&flow, &attrs, &mut enrollment, complete("invite"), at(2)).completed);
}

#[test]
fn dismissing_a_flow_with_nothing_required_leaves_it_skipped_not_completed() {
    let f = flow(json!([{"key": "tour", "title": "Tour", "required": false}]));
    let mut e = Enrollment::new(at(0));
    let outcome = run(&f, &no_attributes(), &mut e, Command::SkipFlow, at(1));
    assert!(!outcome.completed);
    assert_eq!(e.status, EnrollmentStatus::Skipped);
    assert_eq!(e.completed_at, None);
    assert_eq!(e.skipped_at, Some(at(1)));
    // Coming back completes it: nothing required is left.
    let outcome = run(&f, &no_attributes(), &mut e, Command::Start, at(2));
    assert!(outcome.completed);
    assert_eq!(e.status, EnrollmentStatus::Completed);
    assert_eq!(e.skipped_at, None);
}

// ---------------------------------------------------------------------------------------
// credit: who finished a step
// ---------------------------------------------------------------------------------------

#[test]
fn credit_names_who_finished_the_steps_a_command_changed() {
    let f = basic_flow();
    let mut e = Enrollment::new(at(0));
    let done = run(&f, &no_attributes(), &mut e, complete("profile"), at(1));
    credit(&mut e, &done.changed_steps, "alice");
    let skipped = run(&f, &no_attributes(), &mut e, skip("tour"), at(2));
    credit(&mut e, &skipped.changed_steps, "bob");
    let started = run(&f, &no_attributes(), &mut e, start_step("invite"), at(3));
    credit(&mut e, &started.changed_steps, "carol");
    assert_eq!(e.steps["profile"].completed_by.as_deref(), Some("alice"));
    assert_eq!(e.steps["tour"].completed_by.as_deref(), Some("bob"), "skipping is finishing");
    assert_eq!(e.steps["invite"].completed_by, None, "a started step is not finished by anyone yet");
}

#[test]
fn a_step_that_changes_again_forgets_who_finished_it_before() {
    let f = basic_flow();
    let mut e = Enrollment::new(at(0));
    let skipped = run(&f, &no_attributes(), &mut e, skip("tour"), at(1));
    credit(&mut e, &skipped.changed_steps, "bob");
    // Completed later by an event with no user: bob did not complete it.
    run(&f, &no_attributes(), &mut e, complete("tour"), at(2));
    assert_eq!(e.steps["tour"].status, StepStatus::Completed);
    assert_eq!(e.steps["tour"].completed_by, None);
}

// ---------------------------------------------------------------------------------------
// mark_reached: rows for applicable steps, stamped when first available
// ---------------------------------------------------------------------------------------

#[test]
fn every_applicable_step_gets_a_record_and_the_available_ones_a_reach_time() {
    let f = flow(json!([
        {"key": "profile", "title": "Profile"},
        {"key": "invite", "title": "Invite", "dependsOn": ["profile"]},
        {"key": "billing", "title": "Billing", "condition": {"attr": "plan", "op": "eq", "value": "team"}}
    ]));
    let mut e = Enrollment::new(at(0));
    let marked = mark_reached(&f, &no_attributes(), &mut e, at(0));
    assert_eq!(marked, ["profile", "invite"], "billing does not apply");
    assert_eq!(e.steps["profile"].available_at, Some(at(0)));
    assert_eq!(e.steps["invite"].available_at, None, "locked behind profile");
    assert!(!e.steps["invite"].is_touched(), "a record is not an action");
    let seen = |steps: &BTreeMap<String, StepState>| {
        let v = view(&f, &no_attributes(), steps);
        let steps: Vec<_> = v.steps.iter().map(|s| (s.status, s.available, s.blocked_by.clone())).collect();
        (steps, v.percent_complete, v.position, v.next_step)
    };
    assert_eq!(seen(&e.steps), seen(&BTreeMap::new()), "no visible change");

    run(&f, &no_attributes(), &mut e, complete("profile"), at(5));
    assert_eq!(mark_reached(&f, &no_attributes(), &mut e, at(5)), ["invite"]);
    assert_eq!(e.steps["invite"].available_at, Some(at(5)));
    assert_eq!(e.steps["profile"].available_at, Some(at(0)), "the first reach is kept");
    assert!(mark_reached(&f, &no_attributes(), &mut e, at(9)).is_empty(), "nothing new to mark");

    // Attributes that bring a step into the flow give it a record then.
    assert_eq!(mark_reached(&f, &json!({"plan": "team"}), &mut e, at(10)), ["billing"]);
    assert_eq!(e.steps["billing"].available_at, Some(at(10)));
}

#[test]
fn a_step_acted_on_before_it_was_stamped_was_reached_when_first_acted_on() {
    let f = basic_flow();
    let mut e = Enrollment::new(at(0));
    run(&f, &no_attributes(), &mut e, start_step("tour"), at(3));
    run(&f, &no_attributes(), &mut e, complete("tour"), at(4));
    mark_reached(&f, &no_attributes(), &mut e, at(20));
    assert_eq!(e.steps["tour"].available_at, Some(at(3)));
    assert_eq!(e.steps["profile"].available_at, Some(at(20)));
}
