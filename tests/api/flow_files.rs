//! Flows as files: `onramp flows check / plan / apply / export` run in-process against a
//! real server over HTTP, and localized content (fallback chain, CSV round trip).

use std::path::{Path, PathBuf};

use onramp::cli::flows::{self, Action, ApplyOptions, Target, translations};
use serde_json::{Value, json};

use crate::both;
use crate::common::TestApp;

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("onramp-flows-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, value: &Value) {
        std::fs::write(self.0.join(name), serde_json::to_string_pretty(value).unwrap()).unwrap();
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Written the way people write them: shorthand conditions, defaults left out.
fn welcome() -> Value {
    json!({
        "key": "welcome",
        "title": "Welcome",
        "steps": [
            { "key": "verify_email", "title": "Verify your email", "points": 10 },
            { "key": "profile", "title": "Complete your profile", "dependsOn": ["verify_email"], "points": 5 },
            { "key": "invite", "title": "Invite your team", "required": false, "condition": { "plan": "team" } }
        ]
    })
}

fn admin_setup() -> Value {
    json!({
        "key": "admin_setup",
        "title": "Set up your workspace",
        "audience": { "role": "admin" },
        "steps": [ { "key": "billing", "title": "Configure billing" } ]
    })
}

fn action(plan: &flows::Plan, key: &str) -> Action {
    plan.flows.iter().find(|f| f.key == key).unwrap_or_else(|| panic!("{key} not in the plan")).action
}

async fn plan(app: &TestApp, dir: &Path) -> flows::Plan {
    let (server, token) = (app.url(""), app.admin());
    flows::plan(dir, &Target { server: &server, token: &token }, false).await.expect("plan")
}

async fn apply(app: &TestApp, dir: &Path, options: &ApplyOptions<'_>) -> anyhow::Result<flows::Applied> {
    let (server, token) = (app.url(""), app.admin());
    flows::apply(dir, &Target { server: &server, token: &token }, options).await
}

const APPLY: ApplyOptions<'static> = ApplyOptions { saved_plan: None, migrate: false, prune: false };

async fn check_plan_apply_edit_apply(app: TestApp) {
    let dir = TempDir::new();
    dir.write("welcome.json", &welcome());
    std::fs::create_dir(dir.path().join("admin")).unwrap();
    dir.write("admin/admin_setup.json", &admin_setup());

    let check = flows::check(dir.path()).unwrap();
    assert!(check.ok(), "{}", check.render());
    assert_eq!(check.directory.flows.len(), 2);

    // Nothing on the server: both are new, and changes are pending.
    let first = plan(&app, dir.path()).await;
    assert_eq!(action(&first, "welcome"), Action::New);
    assert_eq!(action(&first, "admin_setup"), Action::New);
    assert!(first.has_changes());
    let text = first.render();
    assert!(text.contains("+ welcome: new (v1, 3 steps)"), "{text}");
    assert!(text.contains("Plan: 2 new, 0 new version(s), 0 unchanged"), "{text}");

    let applied = apply(&app, dir.path(), &APPLY).await.unwrap();
    let mut published = applied.published.clone();
    published.sort();
    assert_eq!(published, [("admin_setup".to_string(), 1), ("welcome".to_string(), 1)]);

    // Applied: nothing pending, and applying again publishes nothing.
    let second = plan(&app, dir.path()).await;
    assert!(!second.has_changes(), "{}", second.render());
    assert_eq!(action(&second, "welcome"), Action::Unchanged);
    assert!(apply(&app, dir.path(), &APPLY).await.unwrap().published.is_empty());
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 2);

    // Subjects part-way: alice finished the first step of v1.
    let alice = app.user("alice");
    app.ok(
        &alice,
        "mutation { completeStep(flowKey: \"welcome\", stepKey: \"verify_email\") { revision } }",
        json!({}),
    )
    .await;

    // Edit one step: profile gets a new title and more points.
    let mut edited = welcome();
    edited["steps"][1]["title"] = json!("Fill in your profile");
    edited["steps"][1]["points"] = json!(8);
    dir.write("welcome.json", &edited);
    let third = plan(&app, dir.path()).await;
    assert_eq!(action(&third, "welcome"), Action::NewVersion);
    assert_eq!(action(&third, "admin_setup"), Action::Unchanged);
    assert_eq!(third.publishes().count(), 1, "one new version");
    let planned = third.flows.iter().find(|f| f.key == "welcome").unwrap();
    assert_eq!((planned.expected_version, planned.active_version), (1, Some(1)));
    assert!(planned.diff.added_steps.is_empty() && planned.diff.removed_steps.is_empty());
    assert_eq!(planned.diff.changed_steps.len(), 1);
    let profile = &planned.diff.changed_steps[0];
    assert_eq!(profile.key, "profile");
    let fields: Vec<(&str, Option<&Value>, Option<&Value>)> =
        profile.fields.iter().map(|f| (f.field.as_str(), f.before.as_ref(), f.after.as_ref())).collect();
    assert_eq!(
        fields,
        [
            ("points", Some(&json!(5)), Some(&json!(8))),
            ("title", Some(&json!("Complete your profile")), Some(&json!("Fill in your profile")))
        ]
    );
    let migration = planned.migration.as_ref().expect("a migration preview");
    assert_eq!((migration.moved, migration.became_complete), (1, 0));
    let text = third.render();
    assert!(text.contains("~ welcome: new version (v1 -> v2)"), "{text}");
    assert!(text.contains("~ step profile"), "{text}");
    assert!(text.contains("points: 5 -> 8"), "{text}");
    assert!(text.contains("migration of enrollments on v1 (with --migrate): 1 move, 0 become complete"), "{text}");
    // The preview wrote nothing.
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 2);

    let applied = apply(&app, dir.path(), &ApplyOptions { migrate: true, ..APPLY }).await.unwrap();
    assert_eq!(applied.published, [("welcome".to_string(), 2)]);
    assert_eq!(applied.migrated.len(), 1);
    assert_eq!(applied.migrated[0].3.moved, 1);
    let status = app
        .ok(&alice, "{ status(flowKey: \"welcome\") { version steps { key title points status } } }", json!({}))
        .await;
    assert_eq!(status["status"]["version"], 2, "alice moved to v2");
    assert_eq!(status["status"]["steps"][0]["status"], "COMPLETED", "keeping what she did");
    assert_eq!(status["status"]["steps"][1]["title"], "Fill in your profile");
    assert!(!plan(&app, dir.path()).await.has_changes());
}

async fn check_reports_file_and_path(_app: TestApp) {
    let dir = TempDir::new();
    dir.write("good.json", &welcome());
    let mut bad = welcome();
    bad["steps"][1]["dependsOn"] = json!(["nowhere"]);
    dir.write("bad.json", &bad);
    std::fs::write(dir.path().join("broken.json"), "{ \"key\": ").unwrap();
    let mut twin = admin_setup();
    twin["key"] = json!("welcome");
    let report = flows::check(dir.path()).unwrap();
    assert!(!report.ok());
    let problems: Vec<(String, &str, &str)> = report
        .directory
        .problems
        .iter()
        .map(|p| (p.file.file_name().unwrap().to_string_lossy().into_owned(), p.path.as_str(), p.code.as_str()))
        .collect();
    assert_eq!(
        problems,
        [
            ("bad.json".to_string(), "$.steps[1].dependsOn[0]", "UNKNOWN_DEPENDENCY"),
            ("broken.json".to_string(), "$", "INVALID_JSON"),
            // bad.json failed, so good.json is the first `welcome`; no duplicate.
        ]
    );
    assert!(report.render().contains("bad.json: $.steps[1].dependsOn[0] UNKNOWN_DEPENDENCY"), "{}", report.render());
    // A second file with the same key is a problem too.
    std::fs::remove_file(dir.path().join("bad.json")).unwrap();
    std::fs::remove_file(dir.path().join("broken.json")).unwrap();
    dir.write("twin.json", &twin);
    let report = flows::check(dir.path()).unwrap();
    assert_eq!(report.directory.problems.len(), 1);
    assert_eq!(report.directory.problems[0].code, "DUPLICATE_FLOW_KEY");
    assert!(report.directory.problems[0].file.ends_with("twin.json"));
    // And plan refuses to run on invalid files.
    let (server, token) = (_app.url(""), _app.admin());
    let err = flows::plan(dir.path(), &Target { server: &server, token: &token }, false).await.unwrap_err();
    assert!(format!("{err:#}").contains("DUPLICATE_FLOW_KEY"), "{err:#}");
}

async fn a_change_between_plan_and_apply_is_refused(app: TestApp) {
    let dir = TempDir::new();
    dir.write("welcome.json", &welcome());
    apply(&app, dir.path(), &APPLY).await.unwrap();

    let mut edited = welcome();
    edited["steps"][0]["points"] = json!(15);
    dir.write("welcome.json", &edited);
    let saved = plan(&app, dir.path()).await;
    assert_eq!(action(&saved, "welcome"), Action::NewVersion);
    let plan_file = dir.path().join(".plan.json");
    std::fs::write(&plan_file, serde_json::to_string(&saved).unwrap()).unwrap();

    // Someone publishes v2 by hand meanwhile.
    let mut by_hand = welcome();
    by_hand["title"] = json!("Hello");
    app.publish(by_hand).await;

    let err = apply(&app, dir.path(), &ApplyOptions { saved_plan: Some(&plan_file), ..APPLY }).await.unwrap_err();
    assert!(format!("{err:#}").contains("changed since the plan"), "{err:#}");
    assert_eq!(app.count("SELECT COUNT(*) FROM flows WHERE key = 'welcome'").await, 2, "nothing published");

    // The server holds the precondition too, for a change that lands between apply's
    // own read and its publish.
    let error = app
        .error(
            Some(&app.admin()),
            "mutation($d: JSON!) { publishFlow(definition: $d, expectedVersion: 1) { version } }",
            json!({ "d": edited }),
        )
        .await;
    assert_eq!(error["extensions"]["code"], "CONFLICT");
    assert_eq!(error["extensions"]["currentVersion"], 2);
    let published = app
        .ok(
            &app.admin(),
            "mutation($d: JSON!) { publishFlow(definition: $d, expectedVersion: 2) { version } }",
            json!({ "d": edited }),
        )
        .await;
    assert_eq!(published["publishFlow"]["version"], 3);
    // 0 is a key never published: once, then no more.
    let publish_new = "mutation($d: JSON!) { publishFlow(definition: $d, expectedVersion: 0) { version } }";
    let first = app.ok(&app.admin(), publish_new, json!({ "d": admin_setup() })).await;
    assert_eq!(first["publishFlow"]["version"], 1);
    let error = app.error(Some(&app.admin()), publish_new, json!({ "d": admin_setup() })).await;
    assert_eq!((&error["extensions"]["code"], &error["extensions"]["currentVersion"]), (&json!("CONFLICT"), &json!(1)));
}

async fn export_check_plan_is_empty(app: TestApp) {
    app.publish(welcome()).await;
    app.publish(localized()).await;
    let mut v2 = admin_setup();
    app.publish(v2.clone()).await;
    v2["title"] = json!("Set up the workspace");
    app.publish(v2).await;

    let dir = TempDir::new();
    let (server, token) = (app.url(""), app.admin());
    let target = Target { server: &server, token: &token };
    let written = flows::export(dir.path(), &target).await.unwrap();
    assert_eq!(written.len(), 3);
    let text = dir.read("welcome.json");
    assert!(text.ends_with("}\n"), "a final newline");
    assert!(text.starts_with("{\n  \"key\": \"welcome\",\n  \"scope\": \"USER\",\n  \"steps\": ["), "{text}");
    let exported: Value = serde_json::from_str(&dir.read("admin_setup.json")).unwrap();
    assert_eq!(exported["title"], "Set up the workspace", "the newest active version");

    assert!(flows::check(dir.path()).unwrap().ok());
    let after = plan(&app, dir.path()).await;
    assert!(!after.has_changes(), "{}", after.render());
    assert!(after.flows.iter().all(|f| f.action == Action::Unchanged));

    // Stable: exporting again writes the same bytes.
    let before = dir.read("onboarding_fr.json");
    flows::export(dir.path(), &target).await.unwrap();
    assert_eq!(dir.read("onboarding_fr.json"), before);
}

async fn prune_deprecates_flows_no_longer_in_the_directory(app: TestApp) {
    app.publish(admin_setup()).await;
    let dir = TempDir::new();
    dir.write("welcome.json", &welcome());
    apply(&app, dir.path(), &APPLY).await.unwrap();

    // Without --prune the other flow is kept, and nothing is pending.
    let kept = plan(&app, dir.path()).await;
    assert!(!kept.has_changes());
    assert!(kept.render().contains("? admin_setup: not in the directory, kept (v1;"), "{}", kept.render());

    let (server, token) = (app.url(""), app.admin());
    let pruning = flows::plan(dir.path(), &Target { server: &server, token: &token }, true).await.unwrap();
    assert!(pruning.has_changes());
    assert!(pruning.render().contains("- admin_setup: deprecate v1"), "{}", pruning.render());
    let applied = apply(&app, dir.path(), &ApplyOptions { prune: true, ..APPLY }).await.unwrap();
    assert_eq!(applied.deprecated, [("admin_setup".to_string(), 1)]);
    let status = app.text("SELECT status FROM flows WHERE key = 'admin_setup'").await;
    assert_eq!(status, "DEPRECATED");
    let again = flows::plan(dir.path(), &Target { server: &server, token: &token }, true).await.unwrap();
    assert!(!again.has_changes(), "{}", again.render());
}

/// English by default, French, and Canadian French for one text.
fn localized() -> Value {
    json!({
        "key": "onboarding_fr",
        "defaultLocale": "en",
        "title": { "en": "Get started", "fr": "Premiers pas", "fr-CA": "Premiers pas (CA)" },
        "steps": [
            { "key": "verify", "title": { "en": "Verify your email", "fr": "Vérifiez votre courriel", "fr-CA": "Confirmez votre courriel" },
              "description": { "en": "Check your inbox", "fr": "Regardez votre boîte", "fr-CA": "Regardez votre boîte (CA)" } },
            { "key": "tour", "title": { "en": "Take the tour", "fr": "Faites le tour", "fr-CA": "Faites le tour (CA)" } }
        ]
    })
}

async fn localized_texts_follow_the_fallback_chain(app: TestApp) {
    app.publish(localized()).await;
    let alice = app.user("alice");
    let read = |locale: Option<&'static str>| {
        let app = &app;
        let alice = alice.clone();
        async move {
            let data = app
                .ok(
                    &alice,
                    "query($l: String) { status(flowKey: \"onboarding_fr\", locale: $l) { title locale steps { title description } nextStep { title } } }",
                    json!({ "l": locale }),
                )
                .await;
            data["status"].clone()
        }
    };
    let exact = read(Some("fr-CA")).await;
    assert_eq!(exact["locale"], "fr-CA");
    assert_eq!(exact["title"], "Premiers pas (CA)");
    assert_eq!(exact["steps"][0]["title"], "Confirmez votre courriel");
    assert_eq!(exact["nextStep"]["title"], "Confirmez votre courriel");
    let language = read(Some("fr-BE")).await;
    assert_eq!((&language["locale"], &language["steps"][1]["title"]), (&json!("fr"), &json!("Faites le tour")));
    assert_eq!(read(Some("fr_CA")).await["locale"], "fr-CA", "an underscore reads as a hyphen");
    let default = read(Some("de-AT")).await;
    assert_eq!((&default["locale"], &default["title"]), (&json!("en"), &json!("Get started")));
    assert_eq!(default["steps"][0]["description"], "Check your inbox");
    assert_eq!(read(None).await["locale"], "en");

    // Without the argument, the subject's `locale` attribute; the argument wins over it.
    app.set_attributes("alice", json!({ "locale": "fr" })).await;
    let by_attribute = read(None).await;
    assert_eq!((&by_attribute["locale"], &by_attribute["title"]), (&json!("fr"), &json!("Premiers pas")));
    assert_eq!(read(Some("en")).await["title"], "Get started");
    // Mutations answer in the same locale.
    let done = app
        .ok(
            &alice,
            "mutation { completeStep(flowKey: \"onboarding_fr\", stepKey: \"verify\", locale: \"fr-CA\") { locale steps { title } } }",
            json!({}),
        )
        .await;
    assert_eq!(done["completeStep"]["steps"][1]["title"], "Faites le tour (CA)");

    // Admin reads show the default locale's texts.
    let flow =
        app.ok(&app.admin(), "{ flow(key: \"onboarding_fr\") { title defaultLocale definition } }", json!({})).await;
    assert_eq!(flow["flow"]["title"], "Get started");
    assert_eq!(flow["flow"]["defaultLocale"], "en");
    assert_eq!(flow["flow"]["definition"]["steps"][0]["title"]["fr-CA"], "Confirmez votre courriel");

    let code = app
        .code(Some(&alice), "{ status(flowKey: \"onboarding_fr\", locale: \"not a locale\") { title } }", json!({}))
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
}

/// The live subscription keeps the locale it was opened with for every snapshot.
async fn live_progress_is_localized(app: TestApp) {
    use crate::common::ws::{TRANSPORT_WS, WsClient};
    app.publish(localized()).await;
    let alice = app.user("alice");
    let mut ws = WsClient::authorized(app.addr, TRANSPORT_WS, &alice).await;
    ws.subscribe(
        "1",
        "subscription { onboardingProgress(flowKey: \"onboarding_fr\", locale: \"fr-BE\") { locale revision steps { title status } } }",
        json!({}),
    )
    .await;
    let first = ws.snapshot("1").await;
    assert_eq!((&first["locale"], &first["steps"][0]["title"]), (&json!("fr"), &json!("Vérifiez votre courriel")));
    app.ok(
        &alice,
        "mutation { completeStep(flowKey: \"onboarding_fr\", stepKey: \"verify\") { revision } }",
        json!({}),
    )
    .await;
    let update = ws.snapshot("1").await;
    assert_eq!(update["steps"][0]["status"], "COMPLETED");
    assert_eq!(update["steps"][1]["title"], "Faites le tour", "still in French");
}

async fn validation_flags_incomplete_locales(app: TestApp) {
    let mut missing = localized();
    missing["steps"][1]["title"] = json!({ "en": "Take the tour", "fr": "Faites le tour" });
    missing["steps"][0]["description"] = json!("Check your inbox");
    let problems = app
        .ok(
            &app.admin(),
            "query($d: JSON!) { validateFlow(definition: $d) { path code message } }",
            json!({ "d": missing }),
        )
        .await["validateFlow"]
        .clone();
    let found: Vec<(String, String)> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap().to_string(), p["message"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(found.len(), 3, "{problems:#}");
    assert!(problems.as_array().unwrap().iter().all(|p| p["code"] == "MISSING_TRANSLATION"));
    assert_eq!(found[0].0, "$.steps[0].description");
    assert!(found[0].1.starts_with("no `fr-CA` text") || found[0].1.starts_with("no `fr` text"), "{found:?}");
    assert_eq!((found[1].0.as_str(), found[2].0.as_str()), ("$.steps[0].description", "$.steps[1].title"));

    let mut undeclared = localized();
    undeclared.as_object_mut().unwrap().remove("defaultLocale");
    let problems = app
        .ok(&app.admin(), "query($d: JSON!) { validateFlow(definition: $d) { path code } }", json!({ "d": undeclared }))
        .await;
    assert_eq!(problems["validateFlow"], json!([{ "path": "$.defaultLocale", "code": "MISSING_FIELD" }]));

    let mut bad_tag = localized();
    bad_tag["title"]["fr CA"] = json!("x");
    let problems = app
        .ok(&app.admin(), "query($d: JSON!) { validateFlow(definition: $d) { path code } }", json!({ "d": bad_tag }))
        .await;
    assert_eq!(problems["validateFlow"], json!([{ "path": "$.title.fr CA", "code": "INVALID_LOCALE" }]));
}

#[test]
fn translations_csv_round_trip() {
    let dir = TempDir::new();
    dir.write("welcome.json", &welcome());
    dir.write("onboarding_fr.json", &localized());

    let csv = translations::export(dir.path(), &["de".to_string()]).unwrap();
    let expected = "flow,text,en,de,fr,fr-CA\n\
        onboarding_fr,title,Get started,,Premiers pas,Premiers pas (CA)\n\
        onboarding_fr,steps.verify.title,Verify your email,,Vérifiez votre courriel,Confirmez votre courriel\n\
        onboarding_fr,steps.verify.description,Check your inbox,,Regardez votre boîte,Regardez votre boîte (CA)\n\
        onboarding_fr,steps.tour.title,Take the tour,,Faites le tour,Faites le tour (CA)\n\
        welcome,title,Welcome,,,\n\
        welcome,steps.verify_email.title,Verify your email,,,\n\
        welcome,steps.profile.title,Complete your profile,,,\n\
        welcome,steps.invite.title,Invite your team,,,\n";
    assert_eq!(csv, expected);

    // Imported unchanged, nothing changes and no file is written.
    let csv_path = dir.path().join("texts.csv");
    let before = (dir.read("welcome.json"), dir.read("onboarding_fr.json"));
    std::fs::write(&csv_path, &csv).unwrap();
    let unchanged = translations::import(dir.path(), &csv_path).unwrap();
    assert_eq!((unchanged.texts, unchanged.files.len()), (0, 0));
    assert_eq!((dir.read("welcome.json"), dir.read("onboarding_fr.json")), before);

    // A translator fills in German for `welcome`, and fixes one French text.
    let translated = csv
        .replace("welcome,title,Welcome,,,", "welcome,title,Welcome,Willkommen,,")
        .replace(
            "welcome,steps.verify_email.title,Verify your email,,,",
            "welcome,steps.verify_email.title,Verify your email,E-Mail bestätigen,,",
        )
        .replace(
            "welcome,steps.profile.title,Complete your profile,,,",
            "welcome,steps.profile.title,Complete your profile,Profil ausfüllen,,",
        )
        .replace(
            "welcome,steps.invite.title,Invite your team,,,",
            "welcome,steps.invite.title,Invite your team,\"Team einladen, jetzt\",,",
        )
        .replace("Faites le tour,Faites", "Faites la visite,Faites");
    std::fs::write(&csv_path, &translated).unwrap();
    let imported = translations::import(dir.path(), &csv_path).unwrap();
    assert_eq!(imported.texts, 5);
    assert_eq!(imported.files.len(), 2);
    let welcome: Value = serde_json::from_str(&dir.read("welcome.json")).unwrap();
    assert_eq!(welcome["defaultLocale"], "en", "declared once it has translations");
    assert_eq!(welcome["steps"][2]["title"], json!({ "en": "Invite your team", "de": "Team einladen, jetzt" }));
    assert_eq!(welcome["steps"][2]["condition"], json!({ "plan": "team" }), "the author's shorthand is kept");
    let fr: Value = serde_json::from_str(&dir.read("onboarding_fr.json")).unwrap();
    assert_eq!(fr["steps"][1]["title"]["fr"], "Faites la visite");
    assert!(flows::check(dir.path()).unwrap().ok());

    // Exported again, the CSV is what was imported: the round trip is exact.
    assert_eq!(translations::export(dir.path(), &[]).unwrap(), translated);

    // Half a German translation would leave `welcome` incomplete: nothing is written.
    let half = "flow,text,de\nonboarding_fr,title,Erste Schritte\n";
    std::fs::write(&csv_path, half).unwrap();
    let before = dir.read("onboarding_fr.json");
    let err = translations::import(dir.path(), &csv_path).unwrap_err();
    assert!(format!("{err:#}").contains("MISSING_TRANSLATION"), "{err:#}");
    assert_eq!(dir.read("onboarding_fr.json"), before);

    // Unknown rows are refused with their row number.
    std::fs::write(&csv_path, "flow,text,en\nwelcome,steps.nowhere.title,X\n").unwrap();
    let err = translations::import(dir.path(), &csv_path).unwrap_err();
    assert!(format!("{err:#}").contains("row 2"), "{err:#}");
}

#[test]
fn translations_csv_carries_nudge_texts() {
    let dir = TempDir::new();
    let flow = json!({
        "key": "nudged",
        "title": "Welcome",
        "steps": [{"key": "profile", "title": "Profile"}],
        "nudges": {"rules": [{"key": "start", "trigger": {"kind": "not_started", "after": "1d"},
            "title": "Get started", "message": "Two minutes"}]}
    });
    dir.write("nudged.json", &flow);
    let csv = translations::export(dir.path(), &["de".to_string()]).unwrap();
    assert_eq!(
        csv,
        "flow,text,en,de\nnudged,title,Welcome,\nnudged,steps.profile.title,Profile,\n\
         nudged,nudges.start.title,Get started,\nnudged,nudges.start.message,Two minutes,\n"
    );
    let translated = csv
        .replace("Welcome,", "Welcome,Willkommen")
        .replace("Profile,", "Profile,Profil")
        .replace("Get started,", "Get started,Los geht's")
        .replace("Two minutes,", "Two minutes,Zwei Minuten");
    let csv_path = dir.path().join("texts.csv");
    std::fs::write(&csv_path, &translated).unwrap();
    let imported = translations::import(dir.path(), &csv_path).unwrap();
    assert_eq!(imported.texts, 4);
    let written: Value = serde_json::from_str(&dir.read("nudged.json")).unwrap();
    assert_eq!(written["nudges"]["rules"][0]["title"], json!({"en": "Get started", "de": "Los geht's"}));
    assert_eq!(written["nudges"]["rules"][0]["message"], json!({"en": "Two minutes", "de": "Zwei Minuten"}));
    assert_eq!(written["defaultLocale"], "en");
    assert!(flows::check(dir.path()).unwrap().ok());
    assert_eq!(translations::export(dir.path(), &[]).unwrap(), translated, "the round trip is exact");
}

/// The built binary, as CI runs it: exit codes 1 (check found problems), 2 (plan found
/// changes pending) and 0, with the server and token from the environment.
async fn the_binary_exits_with_what_ci_reads(app: TestApp) {
    let dir = TempDir::new();
    dir.write("welcome.json", &welcome());
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_onramp"));
        command.args(args).env("ONRAMP_SERVER", app.url("")).env("ONRAMP_TOKEN", app.admin()).env("RUST_LOG", "off");
        async move {
            let output = tokio::task::spawn_blocking(move || command.output().expect("run onramp")).await.unwrap();
            (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
        }
    };
    let path = dir.path().to_str().unwrap();
    let (code, out) = run(&["flows", "check", path]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["flows", "plan", path]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("+ welcome: new"), "{out}");
    let (code, out) = run(&["flows", "apply", path]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("published welcome v1"), "{out}");
    let (code, out) = run(&["flows", "plan", path]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Nothing to do."), "{out}");
    dir.write("broken.json", &json!({ "key": "x", "steps": [] }));
    let (code, out) = run(&["flows", "check", path]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("broken.json: $.title MISSING_FIELD"), "{out}");
}

both!(
    the_binary_exits_with_what_ci_reads,
    check_plan_apply_edit_apply,
    check_reports_file_and_path,
    a_change_between_plan_and_apply_is_refused,
    export_check_plan_is_empty,
    prune_deprecates_flows_no_longer_in_the_directory,
    localized_texts_follow_the_fallback_chain,
    live_progress_is_localized,
    validation_flags_incomplete_locales,
);
