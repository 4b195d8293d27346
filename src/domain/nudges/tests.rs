use chrono::{Duration, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::domain::progress::{self, Command, Enrollment, Source};
use crate::domain::stats::Proportion;
use crate::domain::{FlowDefinition, parse_flow};

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn flow_with(nudges: Value) -> Value {
    json!({
        "key": "welcome",
        "title": "Welcome",
        "steps": [
            {"key": "profile", "title": "Profile"},
            {"key": "invite", "title": "Invite", "dependsOn": ["profile"]},
            {"key": "extra", "title": "Extra", "required": false}
        ],
        "nudges": nudges
    })
}

fn flow(rules: Value) -> FlowDefinition {
    parse_flow(&flow_with(json!({"priority": 5, "rules": rules}))).unwrap_or_else(|p| panic!("{p:#?}"))
}

fn rule(trigger: Value) -> Value {
    json!({"key": "r", "trigger": trigger, "title": "Hi", "message": "Come back"})
}

fn codes(nudges: Value) -> Vec<(String, &'static str)> {
    match parse_flow(&flow_with(nudges)) {
        Ok(f) => panic!("expected problems, got {f:#?}"),
        Err(problems) => problems.into_iter().map(|p| (p.path, p.code)).collect(),
    }
}

fn pairs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    expected.iter().map(|(p, c)| (p.to_string(), *c)).collect()
}

/// An enrollment made at t0 with the flow's bookkeeping (reached steps) done.
fn enrolled(f: &FlowDefinition) -> Enrollment {
    let mut e = Enrollment::new(t0());
    progress::mark_reached(f, &json!({}), &mut e, t0());
    e
}

fn act(f: &FlowDefinition, e: &mut Enrollment, command: Command, at: chrono::DateTime<Utc>) {
    progress::apply(f, &json!({}), e, command, Source::User, at).unwrap();
    progress::mark_reached(f, &json!({}), e, at);
}

fn complete(step: &str) -> Command {
    Command::CompleteStep { step: step.into(), metadata: None }
}

// --- durations ---

#[test]
fn durations_read_iso_8601_and_the_short_form() {
    let ok = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(ok("PT24H"), Duration::hours(24));
    assert_eq!(ok("P7D"), Duration::days(7));
    assert_eq!(ok("P1DT12H"), Duration::hours(36));
    assert_eq!(ok("PT1H30M"), Duration::minutes(90));
    assert_eq!(ok("P2W"), Duration::days(14));
    assert_eq!(ok("PT90S"), Duration::seconds(90));
    assert_eq!(ok("24h"), Duration::hours(24));
    assert_eq!(ok("7d"), Duration::days(7));
    assert_eq!(ok("30m"), Duration::minutes(30));
    assert_eq!(ok("2w"), Duration::days(14));
    for bad in [
        "",
        "P",
        "PT",
        "P1M",
        "P1Y",
        "PT1H1H",
        "PT1M1H",
        "1x",
        "h",
        "-1h",
        "+2d",
        "1.5h",
        "P1DT",
        "1 h",
        "99999999999d",
        "PT10S",
        "400d",
        "24H",
        "é",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
    }
    assert_eq!(format_duration(Duration::days(7)), "P7D");
    assert_eq!(format_duration(Duration::hours(36)), "PT36H");
    assert_eq!(format_duration(Duration::minutes(90)), "PT90M");
    assert_eq!(format_duration(Duration::seconds(61)), "PT61S");
}

// --- parsing ---

#[test]
fn a_complete_plan_parses_and_reads_back_the_same() {
    let f = flow(json!([
        {"key": "start", "trigger": {"kind": "not_started", "after": "24h"}, "title": "Get started", "message": "Two minutes", "channel": "both"},
        {"key": "nudge", "trigger": {"kind": "no_progress", "after": "P2D", "every": "1d", "maxCount": 3}, "title": "T", "message": "M"},
        {"key": "stuck-invite", "trigger": {"kind": "stuck", "step": "invite", "after": "PT36H"}, "title": "T", "message": "M", "channel": "webhook"},
        {"key": "gone", "trigger": {"kind": "abandoned", "after": "14d"}, "condition": {"plan": "pro"}, "title": "T", "message": "M", "holdoutPercent": 20}
    ]));
    assert_eq!(f.nudges.priority, 5);
    assert_eq!(f.nudges.rules.len(), 4);
    assert_eq!(f.nudges.rules[0].channel, Channel::Both);
    assert_eq!(
        f.nudges.rules[1].trigger,
        NudgeTrigger::NoProgress { after: Duration::days(2), every: Duration::days(1), max_count: 3 }
    );
    assert_eq!(f.nudges.rules[2].trigger, NudgeTrigger::Stuck { step: "invite".into(), after: Duration::hours(36) });
    assert_eq!(f.nudges.rules[3].holdout_percent, 20);
    assert!(f.nudges.rules[3].condition.is_some());
    let stored = f.to_json();
    assert_eq!(
        stored["nudges"]["rules"][1]["trigger"],
        json!({"kind": "no_progress", "after": "P2D", "every": "P1D", "maxCount": 3})
    );
    assert_eq!(stored["nudges"]["rules"][0]["trigger"]["after"], "P1D");
    assert_eq!(parse_flow(&stored).unwrap(), f, "the stored form reads back as the same definition");
}

#[test]
fn defaults_and_an_absent_section() {
    let f = flow(json!([rule(json!({"kind": "no_progress", "after": "6h"}))]));
    let r = &f.nudges.rules[0];
    assert_eq!(r.channel, Channel::InApp);
    assert_eq!(r.holdout_percent, 0);
    assert_eq!(
        r.trigger,
        NudgeTrigger::NoProgress { after: Duration::hours(6), every: Duration::hours(6), max_count: 1 }
    );
    let plain = parse_flow(&json!({"key": "k", "title": "T", "steps": [{"key": "a", "title": "A"}]})).unwrap();
    assert!(plain.nudges.is_empty());
    assert!(plain.to_json().get("nudges").is_none(), "a flow without nudges stores as before");
}

#[test]
fn every_problem_has_a_path_and_a_code() {
    use crate::domain::validation::codes::*;
    use codes::*;
    assert_eq!(codes(json!([])), pairs(&[("$.nudges", INVALID_NUDGE)]));
    assert_eq!(
        codes(json!({"priority": 5000, "rules": "x", "extra": 1})),
        pairs(&[("$.nudges.extra", UNKNOWN_FIELD), ("$.nudges.priority", WRONG_TYPE), ("$.nudges.rules", WRONG_TYPE)])
    );
    let many: Vec<Value> = (0..21).map(|i| json!({"key": format!("r{i}")})).collect();
    assert_eq!(codes(json!({"rules": many})), pairs(&[("$.nudges.rules", TOO_MANY_NUDGES)]));
    assert_eq!(
        codes(json!({"rules": [
            rule(json!({"kind": "not_started", "after": "1h"})),
            rule(json!({"kind": "not_started", "after": "1h"}))
        ]})),
        pairs(&[("$.nudges.rules[1].key", DUPLICATE_NUDGE_KEY)])
    );
    assert_eq!(
        codes(json!({"rules": [
            {"key": "1bad", "trigger": {"kind": "sometimes"}, "title": "", "message": "x".repeat(2001), "channel": "sms", "holdoutPercent": 101, "color": "red"}
        ]})),
        pairs(&[
            ("$.nudges.rules[0].color", UNKNOWN_FIELD),
            ("$.nudges.rules[0].key", INVALID_KEY),
            ("$.nudges.rules[0].trigger.kind", INVALID_NUDGE),
            ("$.nudges.rules[0].title", MISSING_FIELD),
            ("$.nudges.rules[0].message", NUDGE_TEXT_TOO_LONG),
            ("$.nudges.rules[0].channel", INVALID_NUDGE),
            ("$.nudges.rules[0].holdoutPercent", INVALID_NUDGE),
        ])
    );
    assert_eq!(
        codes(json!({"rules": [
            rule(json!({"kind": "stuck", "step": "nope", "after": "1d"})),
        ]})),
        pairs(&[("$.nudges.rules[0].trigger.step", UNKNOWN_NUDGE_STEP)])
    );
    assert_eq!(
        codes(json!({"rules": [
            rule(json!({"kind": "no_progress", "after": "soon", "every": 5, "maxCount": 11, "step": "a"})),
        ]})),
        pairs(&[
            ("$.nudges.rules[0].trigger.step", UNKNOWN_FIELD),
            ("$.nudges.rules[0].trigger.after", INVALID_DURATION),
            ("$.nudges.rules[0].trigger.every", INVALID_DURATION),
            ("$.nudges.rules[0].trigger.maxCount", INVALID_NUDGE),
        ])
    );
    assert_eq!(
        codes(json!({"rules": [rule(json!({"kind": "abandoned"}))]})),
        pairs(&[("$.nudges.rules[0].trigger.after", MISSING_FIELD)])
    );
    assert_eq!(
        codes(
            json!({"rules": [{"key": "r", "trigger": {"kind": "abandoned", "after": "1d"}, "title": "T", "message": "M", "condition": {"steps.nope.status": "COMPLETED"}}]})
        ),
        pairs(&[("$.nudges.rules[0].condition.steps.nope.status", UNKNOWN_ANSWER_REFERENCE)])
    );
    assert_eq!(codes(json!({"rules": [{"key": "r"}]})).len(), 3, "trigger, title and message are required");
}

#[test]
fn a_condition_may_read_any_step_of_the_flow() {
    let f = flow(json!([{"key": "r", "trigger": {"kind": "abandoned", "after": "1d"}, "title": "T", "message": "M",
        "condition": {"steps.extra.status": "PENDING"}}]));
    assert!(f.nudges.rules[0].condition.is_some());
}

// --- schedule ---

#[test]
fn not_started_is_due_after_enrollment_and_gone_once_anything_is_done() {
    let f = flow(json!([rule(json!({"kind": "not_started", "after": "24h"}))]));
    let r = &f.nudges.rules[0];
    let mut e = enrolled(&f);
    let due = next_due(r, &f, &json!({}), &e).unwrap();
    assert_eq!(due, Due { anchor: t0(), number: 1, at: t0() + Duration::hours(24) });
    assert!(holds(r, &f, &json!({}), &e, &due));
    assert_eq!(following(r, &due), None, "once");
    act(&f, &mut e, Command::StartStep { step: "profile".into() }, t0() + Duration::hours(1));
    assert_eq!(next_due(r, &f, &json!({}), &e), None);
    assert!(!holds(r, &f, &json!({}), &e, &due), "cancelled by progress");
}

#[test]
fn no_progress_waits_for_a_start_then_repeats_from_the_last_activity() {
    let f = flow(json!([rule(json!({"kind": "no_progress", "after": "2d", "every": "1d", "maxCount": 3}))]));
    let r = &f.nudges.rules[0];
    let mut e = enrolled(&f);
    assert_eq!(next_due(r, &f, &json!({}), &e), None, "not started: that is not_started's business");
    let t1 = t0() + Duration::hours(5);
    act(&f, &mut e, complete("profile"), t1);
    let first = next_due(r, &f, &json!({}), &e).unwrap();
    assert_eq!(first, Due { anchor: t1, number: 1, at: t1 + Duration::days(2) });
    let second = following(r, &first).unwrap();
    assert_eq!(second, Due { anchor: t1, number: 2, at: t1 + Duration::days(3) });
    let third = following(r, &second).unwrap();
    assert_eq!(third.at, t1 + Duration::days(4));
    assert_eq!(following(r, &third), None, "at most maxCount");
    assert!(holds(r, &f, &json!({}), &e, &third));
    // Progress starts a new period: the old occurrences no longer hold.
    let t2 = t1 + Duration::days(2) + Duration::hours(1);
    act(&f, &mut e, Command::StartStep { step: "invite".into() }, t2);
    assert!(!holds(r, &f, &json!({}), &e, &second));
    assert_eq!(next_due(r, &f, &json!({}), &e).unwrap(), Due { anchor: t2, number: 1, at: t2 + Duration::days(2) });
}

#[test]
fn stuck_measures_from_when_the_step_became_available() {
    let f = flow(json!([rule(json!({"kind": "stuck", "step": "invite", "after": "36h"}))]));
    let r = &f.nudges.rules[0];
    let mut e = enrolled(&f);
    assert_eq!(next_due(r, &f, &json!({}), &e), None, "locked behind profile");
    let t1 = t0() + Duration::hours(3);
    act(&f, &mut e, complete("profile"), t1);
    let due = next_due(r, &f, &json!({}), &e).unwrap();
    assert_eq!(due, Due { anchor: t1, number: 1, at: t1 + Duration::hours(36) });
    // Work elsewhere does not unstick the step.
    act(&f, &mut e, complete("extra"), t1 + Duration::hours(1));
    assert!(holds(r, &f, &json!({}), &e, &due));
    act(&f, &mut e, complete("invite"), t1 + Duration::hours(2));
    assert!(!holds(r, &f, &json!({}), &e, &due));
    assert_eq!(next_due(r, &f, &json!({}), &e), None);
}

#[test]
fn abandoned_counts_from_the_last_activity_started_or_not() {
    let f = flow(json!([rule(json!({"kind": "abandoned", "after": "7d"}))]));
    let r = &f.nudges.rules[0];
    let mut e = enrolled(&f);
    assert_eq!(next_due(r, &f, &json!({}), &e).unwrap().at, t0() + Duration::days(7));
    let t1 = t0() + Duration::days(1);
    act(&f, &mut e, complete("profile"), t1);
    let due = next_due(r, &f, &json!({}), &e).unwrap();
    assert_eq!(due.at, t1 + Duration::days(7));
    assert_eq!(following(r, &due), None);
}

#[test]
fn finishing_or_dismissing_the_flow_cancels_every_rule() {
    let f = flow(json!([
        {"key": "a", "trigger": {"kind": "abandoned", "after": "7d"}, "title": "T", "message": "M"},
        {"key": "b", "trigger": {"kind": "no_progress", "after": "1d"}, "title": "T", "message": "M"}
    ]));
    let mut e = enrolled(&f);
    act(&f, &mut e, Command::SkipFlow, t0() + Duration::hours(1));
    assert!(f.nudges.rules.iter().all(|r| next_due(r, &f, &json!({}), &e).is_none()));
    let mut done = enrolled(&f);
    act(&f, &mut done, complete("profile"), t0());
    act(&f, &mut done, complete("invite"), t0());
    assert!(f.nudges.rules.iter().all(|r| next_due(r, &f, &json!({}), &done).is_none()));
}

#[test]
fn a_condition_decides_whether_the_rule_applies_at_all() {
    let f = flow(
        json!([{"key": "r", "trigger": {"kind": "abandoned", "after": "1d"}, "title": "T", "message": "M", "condition": {"plan": "pro"}}]),
    );
    let r = &f.nudges.rules[0];
    let e = enrolled(&f);
    assert_eq!(next_due(r, &f, &json!({"plan": "free"}), &e), None);
    let due = next_due(r, &f, &json!({"plan": "pro"}), &e).unwrap();
    assert!(!holds(r, &f, &json!({"plan": "free"}), &e, &due), "a downgrade cancels it");
}

#[test]
fn catch_up_sends_only_the_latest_occurrence_due() {
    let f = flow(json!([rule(json!({"kind": "no_progress", "after": "1d", "every": "1d", "maxCount": 5}))]));
    let r = &f.nudges.rules[0];
    let first = Due { anchor: t0(), number: 1, at: t0() + Duration::days(1) };
    assert_eq!(catch_up(r, first, t0() + Duration::days(1)), first);
    let late = catch_up(r, first, t0() + Duration::days(3) + Duration::hours(2));
    assert_eq!(late.number, 3);
    assert_eq!(catch_up(r, first, t0() + Duration::days(100)).number, 5);
}

// --- budget, quiet hours, holdout ---

fn cand<'a>(flow: &'a str, priority: i32, held_out: bool) -> Candidate<'a> {
    Candidate { priority, due_at: t0(), flow_key: flow, rule_key: "r", held_out }
}

#[test]
fn the_budget_goes_to_the_highest_priority_across_flows() {
    let now = t0();
    let capped = |until| Decision::SuppressedByCap(until);
    let due = [cand("low", 1, false), cand("high", 9, false)];
    // The loser waits a day, until the winner's send leaves the daily window.
    assert_eq!(decide(&due, &[], Caps::default(), None, now), vec![capped(now + Duration::hours(24)), Decision::Send]);
    let both = Caps { per_day: 2, per_week: 3 };
    assert_eq!(decide(&due, &[], both, None, now), vec![Decision::Send, Decision::Send]);
    // One already sent today: nothing more until it is a day old.
    assert_eq!(
        decide(&due, &[now - Duration::hours(23)], Caps::default(), None, now),
        vec![capped(now + Duration::hours(1)); 2]
    );
    // 25 hours ago is outside the day, but three this week fill the week until the
    // oldest is a week old.
    assert_eq!(decide(&due[1..], &[now - Duration::hours(25)], Caps::default(), None, now), vec![Decision::Send]);
    let week = [now - Duration::days(2), now - Duration::days(4), now - Duration::days(6)];
    assert_eq!(decide(&due[1..], &week, Caps::default(), None, now), vec![capped(now + Duration::days(1))]);
    assert_eq!(decide(&due[1..], &[now - Duration::days(8); 5], Caps::default(), None, now), vec![Decision::Send]);
    let off = Caps { per_day: 0, per_week: 0 };
    assert_eq!(decide(&due, &week, off, None, now), vec![Decision::Send, Decision::Send]);
}

#[test]
fn the_budget_is_back_when_enough_sends_leave_each_window() {
    let now = t0();
    let h = Duration::hours;
    let caps = Caps { per_day: 2, per_week: 3 };
    assert_eq!(caps.free_at(&[], now), now);
    assert_eq!(caps.free_at(&[now - h(5)], now), now, "one of two today");
    // Two today: free when the older of the two is a day old.
    assert_eq!(caps.free_at(&[now - h(2), now - h(5)], now), now + h(19));
    // Day and week both full: the later of the two.
    let sent = [now - h(1), now - h(2), now - Duration::days(6)];
    assert_eq!(caps.free_at(&sent, now), now + h(24));
    let sent = [now - h(1), now - Duration::days(3), now - Duration::days(6) - h(22)];
    assert_eq!(caps.free_at(&sent, now), now + h(2), "the week frees first, the day is not full");
    // Whatever it returns lets one more through there, and not a second earlier.
    for sent in [vec![now - h(2), now - h(5)], vec![now - h(1), now - h(2), now - Duration::days(6)]] {
        let at = caps.free_at(&sent, now);
        assert!(caps.allow(&sent, at) && !caps.allow(&sent, at - Duration::seconds(1)));
    }
    assert_eq!(Caps { per_day: 0, per_week: 0 }.free_at(&[now; 50], now), now);
}

#[test]
fn ties_break_by_due_time_then_keys() {
    let now = t0();
    let capped = Decision::SuppressedByCap(now + Duration::hours(24));
    let mut early = cand("b", 1, false);
    early.due_at = now - Duration::hours(1);
    let due = [cand("a", 1, false), early];
    assert_eq!(decide(&due, &[], Caps::default(), None, now), vec![capped, Decision::Send]);
    let due = [cand("b", 1, false), cand("a", 1, false)];
    assert_eq!(decide(&due, &[], Caps::default(), None, now), vec![capped, Decision::Send]);
}

#[test]
fn held_out_nudges_cost_no_budget_and_quiet_hours_hold_everything() {
    let now = t0();
    let due = [cand("high", 9, true), cand("low", 1, false)];
    assert_eq!(decide(&due, &[], Caps::default(), None, now), vec![Decision::HeldOut, Decision::Send]);
    let until = now + Duration::hours(3);
    assert_eq!(decide(&due, &[], Caps::default(), Some(until), now), vec![Decision::WaitUntil(until); 2]);
}

#[test]
fn quiet_hours_are_read_in_the_subjects_zone() {
    let quiet = QuietHours::parse("21:00-08:00").unwrap();
    assert_eq!(quiet.start, NaiveTime::from_hms_opt(21, 0, 0).unwrap());
    assert!(QuietHours::parse("21:00").is_err());
    assert!(QuietHours::parse("25:00-08:00").is_err());
    assert!(QuietHours::parse("08:00-08:00").is_err());
    let berlin = time_zone(&json!({"timezone": "Europe/Berlin"}));
    let new_york = time_zone(&json!({"timezone": "America/New_York"}));
    assert_eq!(time_zone(&json!({"timezone": "Mars/Olympus"})), chrono_tz::Tz::UTC);
    assert_eq!(time_zone(&json!({})), chrono_tz::Tz::UTC);
    // 2026-12-01 21:30 UTC: 22:30 in Berlin (quiet), 16:30 in New York (not).
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 21, 30, 0).unwrap();
    assert_eq!(quiet_until(now, berlin, Some(quiet)), Some(Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap()));
    assert_eq!(quiet_until(now, new_york, Some(quiet)), None);
    // 05:00 UTC: 06:00 in Berlin (quiet until 08:00 local, same day), midnight in New York.
    let early = Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap();
    assert_eq!(quiet_until(early, berlin, Some(quiet)), Some(Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap()));
    assert_eq!(quiet_until(early, new_york, Some(quiet)), Some(Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 0).unwrap()));
    assert_eq!(quiet_until(early, berlin, None), None);
    // A window within one day.
    let lunch = QuietHours::parse("12:00-13:00").unwrap();
    assert_eq!(quiet_until(t0(), chrono_tz::Tz::UTC, Some(lunch)), Some(t0() + Duration::hours(1)));
    assert_eq!(quiet_until(t0() + Duration::hours(1), chrono_tz::Tz::UTC, Some(lunch)), None);
}

#[test]
fn a_quiet_end_inside_a_clock_jump_resolves_after_it() {
    // Berlin skips 02:00-03:00 on 2026-03-29; quiet hours ending 02:30 end at 03:30 local.
    let berlin = time_zone(&json!({"timezone": "Europe/Berlin"}));
    let quiet = QuietHours::parse("22:00-02:30").unwrap();
    let now = Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap();
    assert_eq!(quiet_until(now, berlin, Some(quiet)), Some(Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()));
}

#[test]
fn holdout_is_the_experiments_hash_and_matches_its_percentage() {
    assert!(!in_holdout("f", "r", "alice", 0));
    assert!(in_holdout("f", "r", "alice", 100));
    let point = crate::domain::experiments::hash_point("nudge:f:r", "alice") % 100;
    assert!(in_holdout("f", "r", "alice", (point + 1) as u8));
    assert!(!in_holdout("f", "r", "alice", point as u8));
    let held = (0..10_000).filter(|i| in_holdout("welcome", "start", &format!("user-{i}"), 20)).count();
    assert!((1800..2200).contains(&held), "about 20% held out, got {held}");
    assert_eq!(in_holdout("welcome", "start", "user-7", 20), in_holdout("welcome", "start", "user-7", 20));
}

// --- results ---

#[test]
fn results_compare_completion_within_the_window() {
    let unit = |held_out: bool, done_after_hours: Option<i64>| Unit {
        held_out,
        at: t0(),
        completed_at: done_after_hours.map(|h| t0() + Duration::hours(h)),
    };
    // Sent: 3 of 4 completed within 7 days (a fourth completed after 10 days).
    // Held out: 1 of 4.
    let units = [
        unit(false, Some(1)),
        unit(false, Some(24)),
        unit(false, Some(100)),
        unit(false, Some(240)),
        unit(true, Some(5)),
        unit(true, None),
        unit(true, None),
        unit(true, Some(200)),
    ];
    let r = rule_result(&units, Duration::days(7));
    assert_eq!(r.sent, Proportion { successes: 3, trials: 4 });
    assert_eq!(r.held_out, Proportion { successes: 1, trials: 4 });
    assert!((r.lift.unwrap() - 0.5).abs() < 1e-12);
    // Pooled p = 0.5, se = sqrt(0.25 * 0.5) = 0.353553..., z = 0.5 / se = 1.414213...
    let test = r.test.unwrap();
    assert!((test.z - std::f64::consts::SQRT_2).abs() < 1e-9, "{test:?}");
    assert!((test.p_value - 0.157_299_207_050_285).abs() < 1e-9, "{test:?}");
    // Wilson 95% for 3/4: (0.3006, 0.9544).
    let i = r.sent_interval.unwrap();
    assert!((i.low - 0.300_641_843).abs() < 1e-6 && (i.high - 0.954_412_16).abs() < 1e-6, "{i:?}");
    assert!(r.warning.is_some(), "four per group is too few to conclude");
    let empty = rule_result(&[], Duration::days(7));
    assert_eq!(empty.sent.trials, 0);
    assert_eq!(empty.test, None);
    assert_eq!(empty.lift, None);
}
