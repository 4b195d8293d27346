//! Nudges end to end, on both databases, with a clock the tests move instead of sleeping:
//! every trigger kind, self-cancellation, the budget across flows, quiet hours in two
//! zones, catch-up after downtime, holdouts, results, and two schedulers on one database.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use onramp::clock::Clock;
use onramp::domain::nudges::{Caps, QuietHours, in_holdout};
use onramp::nudges::NudgeSettings;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::common::TestApp;

fn settings() -> NudgeSettings {
    NudgeSettings {
        caps: Caps { per_day: 0, per_week: 0 },
        quiet_hours: None,
        poll_interval: Duration::from_millis(20),
        clock: Clock::adjustable(),
        ..NudgeSettings::default()
    }
}

fn default_caps() -> NudgeSettings {
    NudgeSettings { caps: Caps::default(), ..settings() }
}

fn quiet_evenings() -> NudgeSettings {
    NudgeSettings { quiet_hours: QuietHours::parse("21:00-08:00").ok(), ..settings() }
}

macro_rules! both_nudges {
    ($settings:ident => $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestApp::sqlite_with_nudges(super::$settings(), None).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::TestApp::postgres_with_nudges(super::$settings(), None).await).await;
                }
            }
        )*
    };
}

both_nudges!(settings =>
    not_started_comes_due_after_enrollment_and_is_dismissed,
    no_progress_repeats_up_to_its_count_and_progress_restarts_it,
    stuck_on_a_step_goes_out_by_webhook,
    abandoned_counts_from_the_last_activity,
    an_event_cancels_a_nudge_and_withdraws_a_shown_one,
    catch_up_after_downtime_sends_one_nudge_per_rule,
    holdout_follows_the_experiments_hash,
    results_compare_sent_with_held_out,
);
both_nudges!(default_caps => the_budget_goes_to_the_higher_priority_flow);
both_nudges!(settings => nudge_texts_are_in_the_subjects_language);
both_nudges!(settings => the_log_keeps_its_lines_when_it_stops_referencing_enrollments);
both_nudges!(quiet_evenings => quiet_hours_hold_nudges_in_the_subjects_zone);

const HOUR: u64 = 3600;

fn clock(app: &TestApp) -> &Clock {
    &app.nudges.as_ref().expect("a nudge scheduler").clock
}

fn advance(app: &TestApp, hours: u64) {
    clock(app).advance(Duration::from_secs(hours * HOUR));
}

/// A flow of three steps (invite waits for profile; invite is completed by the
/// `member.invited` event) with these nudge rules.
fn flow(key: &str, priority: i32, rules: Value) -> Value {
    json!({
        "key": key,
        "title": "Welcome",
        "steps": [
            {"key": "profile", "title": "Profile"},
            {"key": "invite", "title": "Invite", "dependsOn": ["profile"], "trigger": {"event": "member.invited"}},
            {"key": "tour", "title": "Tour", "required": false}
        ],
        "nudges": {"priority": priority, "rules": rules}
    })
}

fn rule(key: &str, trigger: Value) -> Value {
    json!({"key": key, "trigger": trigger, "title": format!("{key} title"), "message": "Come back", "channel": "both"})
}

/// Waits until the scheduler has dealt with everything due by the clock's now.
pub(crate) async fn settle(app: &TestApp) {
    let now = clock(app).now();
    for _ in 0..500 {
        let statement = sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT due_at FROM nudge_schedule WHERE due_at IS NOT NULL".to_string(),
        );
        let rows = app.db.query_all_raw(statement).await.expect("schedule");
        let due = rows.iter().filter(|r| r.try_get_by::<DateTime<Utc>, _>("due_at").expect("due_at") <= now).count();
        if due == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the scheduler left due nudges unhandled");
}

/// (subject, flow, rule, occurrence, outcome) of the whole log, oldest first.
async fn log(app: &TestApp) -> Vec<(String, String, String, i32, String)> {
    let statement = sea_orm::Statement::from_string(
        app.db.get_database_backend(),
        "SELECT s.external_id, l.flow_key, l.rule_key, l.number, l.outcome FROM nudge_log l \
         JOIN subjects s ON s.id = l.subject_id ORDER BY l.id"
            .to_string(),
    );
    app.db
        .query_all_raw(statement)
        .await
        .expect("log")
        .iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap(),
                r.try_get_by_index(1).unwrap(),
                r.try_get_by_index(2).unwrap(),
                r.try_get_by_index(3).unwrap(),
                r.try_get_by_index(4).unwrap(),
            )
        })
        .collect()
}

fn line(subject: &str, flow: &str, rule: &str, n: i32, outcome: &str) -> (String, String, String, i32, String) {
    (subject.into(), flow.into(), rule.into(), n, outcome.into())
}

const NUDGES: &str = "query { nudges { id flowKey ruleKey title message sentAt dismissedAt } }";

async fn pending(app: &TestApp, subject: &str) -> Vec<Value> {
    app.ok(&app.user(subject), NUDGES, json!({})).await["nudges"].as_array().cloned().unwrap_or_default()
}

async fn not_started_comes_due_after_enrollment_and_is_dismissed(app: TestApp) {
    app.publish(flow("welcome", 0, json!([rule("start", json!({"kind": "not_started", "after": "PT24H"}))]))).await;
    app.start_as("alice", "welcome").await;
    advance(&app, 23);
    settle(&app).await;
    assert!(log(&app).await.is_empty(), "not due yet");
    assert!(pending(&app, "alice").await.is_empty());
    advance(&app, 2);
    settle(&app).await;
    assert_eq!(log(&app).await, vec![line("alice", "welcome", "start", 1, "SENT")]);
    let shown = pending(&app, "alice").await;
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_eq!(shown[0]["title"], "start title");
    assert_eq!(shown[0]["message"], "Come back");
    assert!(pending(&app, "bob").await.is_empty(), "nobody else sees it");
    // Webhook too: the channel is both.
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'nudge_due'").await, 1);
    let dismiss = "mutation($id: ID!) { dismissNudge(id: $id) { id dismissedAt } }";
    let id = shown[0]["id"].clone();
    assert_eq!(app.code(Some(&app.user("bob")), dismiss, json!({"id": id})).await, "NOT_FOUND", "not bob's");
    let dismissed = app.ok(&app.user("alice"), dismiss, json!({"id": id})).await;
    assert!(dismissed["dismissNudge"]["dismissedAt"].is_string());
    assert!(pending(&app, "alice").await.is_empty());
    // Once: days later, nothing more.
    advance(&app, 72);
    settle(&app).await;
    assert_eq!(log(&app).await.len(), 1);
}

async fn no_progress_repeats_up_to_its_count_and_progress_restarts_it(app: TestApp) {
    let trigger = json!({"kind": "no_progress", "after": "1d", "every": "P1D", "maxCount": 2});
    app.publish(flow("welcome", 0, json!([rule("keep-going", trigger)]))).await;
    app.start_as("alice", "welcome").await;
    advance(&app, 48);
    settle(&app).await;
    assert!(log(&app).await.is_empty(), "nothing started: that is not_started's case");
    app.complete_as("alice", "welcome", "profile").await;
    advance(&app, 25);
    settle(&app).await;
    advance(&app, 24);
    settle(&app).await;
    advance(&app, 72);
    settle(&app).await;
    let sent =
        vec![line("alice", "welcome", "keep-going", 1, "SENT"), line("alice", "welcome", "keep-going", 2, "SENT")];
    assert_eq!(log(&app).await, sent, "twice, then no more");
    app.complete_as("alice", "welcome", "tour").await;
    advance(&app, 23);
    settle(&app).await;
    assert_eq!(log(&app).await.len(), 2, "progress restarts the wait");
    advance(&app, 2);
    settle(&app).await;
    assert_eq!(log(&app).await.last().cloned(), Some(line("alice", "welcome", "keep-going", 1, "SENT")));
}

async fn stuck_on_a_step_goes_out_by_webhook(app: TestApp) {
    let stuck = json!({"key": "stuck-invite", "trigger": {"kind": "stuck", "step": "invite", "after": "36h"},
        "title": "Invite your team", "message": "It takes a minute", "channel": "webhook"});
    app.publish(flow("welcome", 0, json!([stuck]))).await;
    app.start_as("alice", "welcome").await;
    advance(&app, 40);
    settle(&app).await;
    assert!(log(&app).await.is_empty(), "invite is locked behind profile: not stuck yet");
    app.complete_as("alice", "welcome", "profile").await;
    advance(&app, 35);
    settle(&app).await;
    assert!(log(&app).await.is_empty());
    advance(&app, 2);
    settle(&app).await;
    assert_eq!(log(&app).await, vec![line("alice", "welcome", "stuck-invite", 1, "SENT")]);
    assert!(pending(&app, "alice").await.is_empty(), "webhook only: nothing in-app");
    let payload = app.text("SELECT CAST(payload AS TEXT) FROM outbox WHERE kind = 'nudge_due'").await;
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["nudge"]["title"], "Invite your team");
    assert_eq!(payload["nudge"]["trigger"], "stuck");
    assert_eq!(app.text("SELECT step_key FROM outbox WHERE kind = 'nudge_due'").await, "invite");
}

async fn abandoned_counts_from_the_last_activity(app: TestApp) {
    app.publish(flow("welcome", 0, json!([rule("gone", json!({"kind": "abandoned", "after": "7d"}))]))).await;
    app.start_as("alice", "welcome").await;
    app.start_as("bob", "welcome").await;
    advance(&app, 5 * 24);
    app.complete_as("bob", "welcome", "profile").await;
    advance(&app, 2 * 24 + 1);
    settle(&app).await;
    assert_eq!(log(&app).await, vec![line("alice", "welcome", "gone", 1, "SENT")], "bob was active 2 days ago");
    advance(&app, 5 * 24);
    settle(&app).await;
    assert_eq!(log(&app).await.last().cloned(), Some(line("bob", "welcome", "gone", 1, "SENT")));
    // A skipped (dismissed) flow is never nudged.
    app.start_as("carol", "welcome").await;
    let skip = "mutation($f: String!) { skipOnboarding(flowKey: $f) { status } }";
    app.ok(&app.user("carol"), skip, json!({"f": "welcome"})).await;
    advance(&app, 30 * 24);
    settle(&app).await;
    assert!(log(&app).await.iter().all(|l| l.0 != "carol"));
}

async fn an_event_cancels_a_nudge_and_withdraws_a_shown_one(app: TestApp) {
    let stuck = rule("stuck-invite", json!({"kind": "stuck", "step": "invite", "after": "1d"}));
    app.publish(flow("welcome", 0, json!([stuck]))).await;
    for who in ["alice", "bob"] {
        app.start_as(who, "welcome").await;
        app.complete_as(who, "welcome", "profile").await;
    }
    // Alice's product backend reports the invitation before the nudge is due.
    app.track_event("e1", "alice", "member.invited", json!({})).await;
    advance(&app, 25);
    settle(&app).await;
    assert_eq!(log(&app).await, vec![line("bob", "welcome", "stuck-invite", 1, "SENT")], "alice's was cancelled");
    assert_eq!(pending(&app, "bob").await.len(), 1);
    // Bob invites after the nudge: it is withdrawn from the app without anyone asking.
    app.track_event("e2", "bob", "member.invited", json!({})).await;
    assert!(pending(&app, "bob").await.is_empty());
}

async fn catch_up_after_downtime_sends_one_nudge_per_rule(app: TestApp) {
    let trigger = json!({"kind": "no_progress", "after": "1d", "every": "1d", "maxCount": 5});
    app.publish(flow(
        "welcome",
        0,
        json!([rule("keep-going", trigger), rule("gone", json!({"kind": "abandoned", "after": "3d"}))]),
    ))
    .await;
    app.start_as("alice", "welcome").await;
    app.complete_as("alice", "welcome", "profile").await;
    // Ten days pass while no scheduler runs: five reminders and the abandoned one are due.
    advance(&app, 10 * 24);
    settle(&app).await;
    let mut lines = log(&app).await;
    lines.sort();
    assert_eq!(
        lines,
        vec![line("alice", "welcome", "gone", 1, "SENT"), line("alice", "welcome", "keep-going", 5, "SENT")],
        "the latest occurrence of each rule, no burst"
    );
    advance(&app, 10 * 24);
    settle(&app).await;
    assert_eq!(log(&app).await.len(), 2, "the last reminder is spent");
}

async fn the_budget_goes_to_the_higher_priority_flow(app: TestApp) {
    let start = |key: &str| rule(key, json!({"kind": "not_started", "after": "1h"}));
    app.publish(flow("low", 1, json!([start("low-start")]))).await;
    app.publish(flow("high", 9, json!([start("high-start")]))).await;
    for who in ["alice", "bob"] {
        app.start_as(who, "low").await;
        app.start_as(who, "high").await;
    }
    advance(&app, 2);
    settle(&app).await;
    let mut lines = log(&app).await;
    lines.sort();
    assert_eq!(
        lines,
        vec![
            line("alice", "high", "high-start", 1, "SENT"),
            line("alice", "low", "low-start", 1, "SUPPRESSED_BY_CAP"),
            line("bob", "high", "high-start", 1, "SENT"),
            line("bob", "low", "low-start", 1, "SUPPRESSED_BY_CAP"),
        ]
    );
    // Explained to an admin: held back until the day's nudge is a day old, not dropped.
    let query = "query($s: ID!) { nudgeLog(subjectId: $s) { flowKey ruleKey occurrence outcome channel at until } }";
    let explained = app.ok(&app.admin(), query, json!({"s": "alice"})).await;
    let entries = explained["nudgeLog"].as_array().unwrap();
    let time = |e: &Value, field: &str| DateTime::parse_from_rfc3339(e[field].as_str().unwrap()).unwrap();
    let (sent, capped) = match (entries[0]["outcome"].as_str(), entries[1]["outcome"].as_str()) {
        (Some("SENT"), Some("SUPPRESSED_BY_CAP")) => (&entries[0], &entries[1]),
        (Some("SUPPRESSED_BY_CAP"), Some("SENT")) => (&entries[1], &entries[0]),
        other => panic!("{other:?}"),
    };
    assert_eq!(entries.len(), 2);
    assert_eq!((sent["flowKey"].as_str(), capped["flowKey"].as_str()), (Some("high"), Some("low")));
    assert_eq!(time(capped, "until") - time(sent, "at"), chrono::Duration::hours(24));
    assert_eq!(app.code(Some(&app.user("alice")), query, json!({"s": "alice"})).await, "FORBIDDEN");
    // While bob's waits, he starts the low flow: it no longer holds.
    app.complete_as("bob", "low", "tour").await;
    advance(&app, 23);
    settle(&app).await;
    assert_eq!(log(&app).await.len(), 4, "nothing before the budget is back");
    // A day after the first, the budget is back: alice's waiting nudge goes out, bob's
    // is logged as cancelled by his progress.
    advance(&app, 2);
    settle(&app).await;
    let lines = log(&app).await;
    let mut last = lines[4..].to_vec();
    last.sort();
    assert_eq!(
        last,
        vec![line("alice", "low", "low-start", 1, "SENT"), line("bob", "low", "low-start", 1, "CANCELLED_BY_PROGRESS")]
    );
    // The spent budget holds back the next one in turn.
    app.publish(flow("third", 0, json!([rule("third-start", json!({"kind": "not_started", "after": "1h"}))]))).await;
    app.start_as("alice", "third").await;
    advance(&app, 2);
    settle(&app).await;
    assert_eq!(log(&app).await.last().cloned(), Some(line("alice", "third", "third-start", 1, "SUPPRESSED_BY_CAP")));
    advance(&app, 23);
    settle(&app).await;
    assert_eq!(log(&app).await.last().cloned(), Some(line("alice", "third", "third-start", 1, "SENT")));
    let sent = app.count("SELECT COUNT(*) FROM nudge_log WHERE outcome = 'SENT'").await;
    assert_eq!(sent, 4, "each occurrence sent once, waits logged once");
}

/// The next instant at least a day ahead of `now` whose UTC time is hh:mm.
fn next_utc(now: DateTime<Utc>, hour: u32, minute: u32) -> DateTime<Utc> {
    let mut at = (now + chrono::Duration::days(1)).with_hour(hour).unwrap().with_minute(minute).unwrap();
    at = at.with_second(0).unwrap();
    if at < now + chrono::Duration::days(1) { at + chrono::Duration::days(1) } else { at }
}

async fn quiet_hours_hold_nudges_in_the_subjects_zone(app: TestApp) {
    app.publish(flow("welcome", 0, json!([rule("start", json!({"kind": "not_started", "after": "1h"}))]))).await;
    app.set_attributes("alice", json!({"timezone": "Europe/Berlin"})).await;
    app.set_attributes("bob", json!({"timezone": "America/New_York"})).await;
    app.set_attributes("carol", json!({"timezone": "Europe/Berlin"})).await;
    for who in ["alice", "bob", "carol"] {
        app.start_as(who, "welcome").await;
    }
    // 21:30 UTC: 22:30 or 23:30 in Berlin (quiet), 16:30 or 17:30 in New York (not).
    let now = clock(&app).now();
    let evening = next_utc(now, 21, 30);
    clock(&app).advance((evening - now).to_std().unwrap());
    settle(&app).await;
    let mut lines = log(&app).await;
    lines.sort();
    assert_eq!(
        lines,
        vec![
            line("alice", "welcome", "start", 1, "SUPPRESSED_BY_QUIET_HOURS"),
            line("bob", "welcome", "start", 1, "SENT"),
            line("carol", "welcome", "start", 1, "SUPPRESSED_BY_QUIET_HOURS"),
        ]
    );
    // Carol starts the flow in the night: her waiting nudge no longer holds.
    app.complete_as("carol", "welcome", "profile").await;
    let until = app.text("SELECT CAST(until AS TEXT) FROM nudge_log WHERE outcome = 'SUPPRESSED_BY_QUIET_HOURS'").await;
    // 08:00 in Berlin is 07:00 UTC in winter, 06:00 UTC in summer.
    assert!(until.contains(" 07:00:00") || until.contains(" 06:00:00") || until.contains("T0"), "{until}");
    // The next morning, after 08:00 in Berlin, alice's nudge goes out: it waited, it was not dropped.
    let morning = next_utc(evening - chrono::Duration::hours(12), 7, 30);
    let now = clock(&app).now();
    clock(&app).advance((morning - now).to_std().unwrap());
    settle(&app).await;
    let mut morning_lines = log(&app).await[3..].to_vec();
    morning_lines.sort();
    assert_eq!(
        morning_lines,
        vec![
            line("alice", "welcome", "start", 1, "SENT"),
            line("carol", "welcome", "start", 1, "CANCELLED_BY_PROGRESS")
        ]
    );
    assert_eq!(pending(&app, "alice").await.len(), 1);
    assert!(pending(&app, "carol").await.is_empty());
}

async fn holdout_follows_the_experiments_hash(app: TestApp) {
    let held = json!({"key": "start", "trigger": {"kind": "not_started", "after": "1h"}, "title": "T", "message": "M",
        "holdoutPercent": 50});
    app.publish(flow("welcome", 0, json!([held]))).await;
    let subjects: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    for s in &subjects {
        app.start_as(s, "welcome").await;
    }
    advance(&app, 2);
    settle(&app).await;
    let lines = log(&app).await;
    assert_eq!(lines.len(), subjects.len());
    let mut held_out = 0;
    for s in &subjects {
        let expected = if in_holdout("welcome", "start", s, 50) { "HELD_OUT" } else { "SENT" };
        held_out += usize::from(expected == "HELD_OUT");
        assert!(lines.contains(&line(s, "welcome", "start", 1, expected)), "{s}: {lines:#?}");
        assert_eq!(pending(&app, s).await.is_empty(), expected == "HELD_OUT", "{s}");
    }
    assert!(held_out > 0 && held_out < subjects.len(), "both groups are used: {held_out}");
}

async fn results_compare_sent_with_held_out(app: TestApp) {
    let held = json!({"key": "start", "trigger": {"kind": "not_started", "after": "1h"}, "title": "T", "message": "M",
        "holdoutPercent": 50});
    app.publish(flow("welcome", 0, json!([held]))).await;
    // Four subjects of each group, chosen by the hash.
    let pick = |held: bool| -> Vec<String> {
        (0..).map(|i| format!("u{i}")).filter(|s| in_holdout("welcome", "start", s, 50) == held).take(4).collect()
    };
    let (sent, control) = (pick(false), pick(true));
    for s in sent.iter().chain(&control) {
        app.start_as(s, "welcome").await;
    }
    advance(&app, 2);
    settle(&app).await;
    // Within the 7-day window: 3 of 4 nudged complete, 1 of 4 held out; one more of each
    // completes after the window, which must not count.
    let finish = |s: String| {
        let app = &app;
        async move {
            app.complete_as(&s, "welcome", "profile").await;
            app.complete_as(&s, "welcome", "invite").await;
        }
    };
    for s in [&sent[0], &sent[1], &sent[2], &control[0]] {
        finish(s.clone()).await;
    }
    advance(&app, 8 * 24);
    finish(control[1].clone()).await;
    let query = "query($f: String!) { nudgeResults(flowKey: $f, windowHours: 168) { ruleKey trigger holdoutPercent \
                 sent { enrollments completed completionRate intervalLow intervalHigh } \
                 heldOut { enrollments completed completionRate intervalLow intervalHigh } lift z pValue warning } }";
    let results = app.ok(&app.admin(), query, json!({"f": "welcome"})).await;
    let r = &results["nudgeResults"][0];
    assert_eq!(r["ruleKey"], "start");
    assert_eq!(r["holdoutPercent"], 50);
    assert_eq!((r["sent"]["enrollments"].as_i64(), r["sent"]["completed"].as_i64()), (Some(4), Some(3)), "{r:#}");
    assert_eq!((r["heldOut"]["enrollments"].as_i64(), r["heldOut"]["completed"].as_i64()), (Some(4), Some(1)));
    let close = |v: &Value, expected: f64| (v.as_f64().unwrap() - expected).abs() < 1e-6;
    assert!(close(&r["lift"], 0.5), "{r:#}");
    // Pooled p = 1/2: se = sqrt(1/4 * 1/2) = 0.35355..., z = 0.5 / se = sqrt(2); p = 0.157299...
    assert!(close(&r["z"], std::f64::consts::SQRT_2), "{r:#}");
    assert!(close(&r["pValue"], 0.157_299_207), "{r:#}");
    // Wilson 95% for 3/4 and 1/4.
    assert!(close(&r["sent"]["intervalLow"], 0.300_641_843) && close(&r["sent"]["intervalHigh"], 0.954_412_16));
    assert!(
        close(&r["heldOut"]["intervalLow"], 1.0 - 0.954_412_16)
            && close(&r["heldOut"]["intervalHigh"], 1.0 - 0.300_641_843)
    );
    assert!(r["warning"].is_string(), "four per group is too few");
    assert_eq!(
        app.code(Some(&app.admin()), query.replace("168", "0").as_str(), json!({"f": "welcome"})).await,
        "VALIDATION_FAILED"
    );
}

/// Two schedulers on one PostgreSQL database, racing for the same due nudges: every
/// occurrence is sent exactly once (the unique occurrence key, claims that skip locked
/// rows, and one budget decision per subject at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_never_send_an_occurrence_twice() {
    let nudges = NudgeSettings { batch: 50, ..settings() };
    let app = TestApp::postgres_with_nudges(nudges.clone(), None).await;
    let start = json!({"key": "start", "trigger": {"kind": "not_started", "after": "1h"}, "title": "T", "message": "M",
        "channel": "webhook"});
    let trigger = json!({"kind": "no_progress", "after": "1h", "every": "1h", "maxCount": 3});
    app.publish(flow("welcome", 0, json!([start, rule("again", trigger)]))).await;
    // The second instance shares the clock, as two processes share real time.
    let (_addr, other) = app.another_nudge_instance(nudges).await;
    let subjects: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    for chunk in subjects.chunks(25) {
        let mut tasks = Vec::new();
        for s in chunk {
            let token = app.user(s);
            let client = app.client.clone();
            let url = app.url("/graphql");
            tasks.push(tokio::spawn(async move {
                let q = "mutation { startOnboarding(flowKey: \"welcome\") { status } }";
                client.post(url).bearer_auth(token).json(&json!({"query": q})).send().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    for s in subjects.iter().take(100) {
        app.complete_as(s, "welcome", "tour").await;
    }
    for _ in 0..3 {
        advance(&app, 1);
        settle(&app).await;
    }
    let sent = app.count("SELECT COUNT(*) FROM nudge_log WHERE outcome = 'SENT'").await;
    let distinct = app.count("SELECT COUNT(DISTINCT occurrence) FROM nudge_log WHERE outcome = 'SENT'").await;
    assert_eq!(sent, distinct);
    // 200 not started: one each; 100 started: three reminders each.
    assert_eq!(sent, 200 + 300);
    // Every rule here has the webhook channel: one outbox row per occurrence sent.
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'nudge_due'").await, 500);
    other.shutdown().await;
}

both_nudges!(settings => a_new_in_app_nudge_is_pushed_to_its_subscriber);

async fn a_new_in_app_nudge_is_pushed_to_its_subscriber(app: TestApp) {
    use crate::common::ws::{TRANSPORT_WS, WsClient};
    let start = json!({"key": "start", "trigger": {"kind": "not_started", "after": "1h"}, "title": "Say hello",
        "message": "M"});
    app.publish(flow("welcome", 0, json!([start]))).await;
    app.start_as("alice", "welcome").await;
    app.start_as("bob", "welcome").await;
    let mut alice = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    alice.subscribe("n", "subscription { nudgeReceived { id flowKey ruleKey title } }", json!({})).await;
    // Nothing is pending yet: the subscription starts quiet.
    alice.expect_silence(Duration::from_millis(300)).await;
    advance(&app, 2);
    let payload = alice.payload("n").await;
    let nudge = &payload["data"]["nudgeReceived"];
    assert_eq!(nudge["title"], "Say hello", "{payload:#}");
    assert_eq!(nudge["flowKey"], "welcome");
    assert_eq!(pending(&app, "alice").await[0]["id"], nudge["id"]);
    // Bob's nudge is not alice's: she hears nothing more.
    settle(&app).await;
    alice.expect_silence(Duration::from_millis(300)).await;
}

crate::both!(bad_rules_are_refused_with_paths_and_stored_rules_read_back);

async fn bad_rules_are_refused_with_paths_and_stored_rules_read_back(app: TestApp) {
    let admin = app.admin();
    let publish = "mutation($d: JSON!) { publishFlow(definition: $d) { version definition } }";
    let bad = flow(
        "welcome",
        0,
        json!([
            rule("a", json!({"kind": "no_progress", "after": "soon"})),
            rule("a", json!({"kind": "stuck", "step": "nowhere", "after": "1d"})),
            {"key": "b", "trigger": {"kind": "abandoned", "after": "1d"}, "title": "T", "message": "x".repeat(2001)}
        ]),
    );
    let error = app.error(Some(&admin), publish, json!({"d": bad})).await;
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED");
    let codes: Vec<(&str, &str)> = error["extensions"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("$.nudges.rules[0].trigger.after", "INVALID_DURATION"),
            ("$.nudges.rules[1].key", "DUPLICATE_NUDGE_KEY"),
            ("$.nudges.rules[1].trigger.step", "UNKNOWN_NUDGE_STEP"),
            ("$.nudges.rules[2].message", "NUDGE_TEXT_TOO_LONG"),
        ],
        "{error:#}"
    );
    let many: Vec<Value> =
        (0..21).map(|i| rule(&format!("r{i}"), json!({"kind": "abandoned", "after": "1d"}))).collect();
    let error = app.error(Some(&admin), publish, json!({"d": flow("welcome", 0, json!(many))})).await;
    assert_eq!(error["extensions"]["problems"][0]["code"], "TOO_MANY_NUDGES");
    // Accepted shorthand is stored in its canonical form, which reads back as the same rules.
    let good = flow("welcome", 3, json!([rule("a", json!({"kind": "no_progress", "after": "36h", "maxCount": 2}))]));
    let stored = app.ok(&admin, publish, json!({"d": good})).await["publishFlow"]["definition"].clone();
    assert_eq!(
        stored["nudges"],
        json!({"priority": 3, "rules": [{"key": "a", "trigger": {"kind": "no_progress", "after": "PT36H", "every": "PT36H",
            "maxCount": 2}, "title": "a title", "message": "Come back", "channel": "both", "holdoutPercent": 0}]})
    );
    let again = app.ok(&admin, publish, json!({"d": stored})).await["publishFlow"]["definition"].clone();
    assert_eq!(again["nudges"], stored["nudges"]);
}

/// A flow in English and French, its nudge included.
fn bilingual(message_fr: Option<&str>, title_fr: &str) -> Value {
    let mut message = json!({"en": "Come back", "fr": "Revenez"});
    match message_fr {
        Some(m) => message["fr"] = json!(m),
        None => {
            message.as_object_mut().unwrap().remove("fr");
        }
    }
    json!({
        "key": "welcome",
        "title": {"en": "Welcome", "fr": "Bienvenue"},
        "defaultLocale": "en",
        "steps": [{"key": "profile", "title": {"en": "Profile", "fr": "Profil"}}],
        "nudges": {"rules": [{"key": "start", "trigger": {"kind": "not_started", "after": "1h"},
            "title": {"en": "Get started", "fr": title_fr}, "message": message, "channel": "both"}]}
    })
}

async fn nudge_texts_are_in_the_subjects_language(app: TestApp) {
    let admin = app.admin();
    let publish = "mutation($d: JSON!) { publishFlow(definition: $d) { version } }";
    // A half-translated nudge is refused where it is written, like any other text.
    let problems = |error: Value| -> Vec<(String, String)> {
        error["extensions"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["path"].as_str().unwrap().to_string(), p["code"].as_str().unwrap().to_string()))
            .collect()
    };
    let error = app.error(Some(&admin), publish, json!({"d": bilingual(None, "Commencez")})).await;
    assert_eq!(problems(error), vec![("$.nudges.rules[0].message".into(), "MISSING_TRANSLATION".into())]);
    let error = app.error(Some(&admin), publish, json!({"d": bilingual(Some("Revenez"), &"x".repeat(201))})).await;
    assert_eq!(problems(error), vec![("$.nudges.rules[0].title.fr".into(), "NUDGE_TEXT_TOO_LONG".into())]);
    app.publish(bilingual(Some("Revenez"), "Commencez")).await;

    // Alice reads French (fr-CA falls back to fr), bob the default.
    app.set_attributes("alice", json!({"locale": "fr-CA"})).await;
    app.start_as("alice", "welcome").await;
    app.start_as("bob", "welcome").await;
    advance(&app, 2);
    settle(&app).await;
    assert_eq!(pending(&app, "alice").await[0]["title"], "Commencez");
    assert_eq!(pending(&app, "alice").await[0]["message"], "Revenez");
    assert_eq!(pending(&app, "bob").await[0]["title"], "Get started");
    // A device may ask for another language than the subject's.
    let in_english = "query { nudges(locale: \"en-GB\") { title message } }";
    let read = app.ok(&app.user("alice"), in_english, json!({})).await;
    assert_eq!(read["nudges"][0], json!({"title": "Get started", "message": "Come back"}));
    assert_eq!(
        app.code(Some(&app.user("alice")), "query { nudges(locale: \"x\") { title } }", json!({})).await,
        "VALIDATION_FAILED"
    );
    // The webhook carries the texts as sent, and their locale.
    let payloads = app.rows("SELECT CAST(payload AS TEXT) FROM outbox WHERE kind = 'nudge_due' ORDER BY id").await;
    let payloads: Vec<Value> = payloads.iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let mut texts: Vec<(String, String)> = payloads
        .iter()
        .map(|p| (p["nudge"]["title"].as_str().unwrap().into(), p["nudge"]["locale"].as_str().unwrap().into()))
        .collect();
    texts.sort();
    assert_eq!(texts, vec![("Commencez".into(), "fr".into()), ("Get started".into(), "en".into())]);
    // And the log keeps what each subject was sent.
    let titles = app.rows("SELECT title FROM nudge_log ORDER BY title").await;
    assert_eq!(titles, vec!["Commencez".to_string(), "Get started".to_string()]);
}

/// Inserts a log line for an enrollment id by hand; whether the database took it.
async fn insert_line(app: &TestApp, occurrence: &str, enrollment_id: i64) -> bool {
    let sql = format!(
        "INSERT INTO nudge_log (occurrence, subject_id, enrollment_id, flow_key, flow_version, rule_key, anchor_at, \
         number, outcome, channel, title, message, at) VALUES ('{occurrence}', 1, {enrollment_id}, 'welcome', 1, \
         'start', '2026-01-01T00:00:00Z', 1, 'SENT', 'in_app', 't', 'm', '2026-01-01T00:00:00Z')"
    );
    app.db.execute_unprepared(&sql).await.is_ok()
}

/// Migration 000012 drops the log's foreign key to enrollments (on SQLite by rebuilding
/// the table): the lines written before stay, with their ids, the occurrence stays unique
/// (what makes a send happen once), the indexes are back, and going down restores the key.
async fn the_log_keeps_its_lines_when_it_stops_referencing_enrollments(app: TestApp) {
    use migration::MigratorTrait;
    app.publish(flow("welcome", 0, json!([rule("start", json!({"kind": "not_started", "after": "PT24H"}))]))).await;
    app.start_as("alice", "welcome").await;
    advance(&app, 25);
    settle(&app).await;
    assert_eq!(log(&app).await, vec![line("alice", "welcome", "start", 1, "SENT")]);
    let id_before = app.count("SELECT MAX(id) FROM nudge_log").await;
    let unknown_enrollment = 1_000_000_000;

    // Down one: the key is back, so a line for no enrollment is refused.
    migration::Migrator::down(&app.db, Some(1)).await.expect("down to 000011");
    assert!(!insert_line(&app, "x:orphan:0:1", unknown_enrollment).await, "the foreign key refuses it");
    assert_eq!(log(&app).await, vec![line("alice", "welcome", "start", 1, "SENT")], "kept going down");

    // Up again: the same lines, ids kept, no key, occurrences still unique.
    migration::Migrator::up(&app.db, None).await.expect("up to the latest");
    assert_eq!(log(&app).await, vec![line("alice", "welcome", "start", 1, "SENT")], "kept going up");
    assert_eq!(app.count("SELECT MAX(id) FROM nudge_log").await, id_before);
    assert!(insert_line(&app, "x:orphan:0:1", unknown_enrollment).await, "no foreign key any more");
    assert!(!insert_line(&app, "x:orphan:0:1", unknown_enrollment).await, "occurrence is still unique");
    assert!(app.count("SELECT MAX(id) FROM nudge_log").await > id_before, "ids go on after the old ones");
    let indexes = if app.is_postgres() {
        "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'nudge_log' \
         AND indexname IN ('nudge_log_subject', 'nudge_log_rule')"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'nudge_log' \
         AND name IN ('nudge_log_subject', 'nudge_log_rule')"
    };
    assert_eq!(app.count(indexes).await, 2);
    // nudgeResults joins the enrollments: the orphan line is not counted.
    let results = app
        .ok(&app.admin(), "{ nudgeResults(flowKey: \"welcome\") { ruleKey sent { enrollments } } }", json!({}))
        .await;
    assert_eq!(results["nudgeResults"][0]["sent"]["enrollments"], 1, "{results:#}");
}
