//! Every mutation is all or nothing: when anything fails after its first write (a later
//! statement, reading back what it wrote), nothing of it is saved and reads keep working.
//! The failures are provoked from the database side, with triggers the tests install:
//! one that corrupts a stored row after the insert, one that refuses a later statement.

use serde_json::{Value, json};

use crate::both;
use crate::common::{TestApp, sample_flow};

both!(
    a_published_version_that_does_not_read_back_is_not_saved,
    a_deprecation_that_fails_after_its_update_is_not_saved,
    an_experiment_whose_variants_fail_is_not_created,
    experiment_weights_change_all_together_or_not_at_all,
);

const PUBLISH: &str = "mutation($d: JSON!) { publishFlow(definition: $d) { key version } }";

/// Runs `sqlite` or `postgres` (one or more statements) on the test's database.
async fn install(app: &TestApp, sqlite: &str, postgres: &str) {
    use sea_orm::ConnectionTrait;
    let sql = if app.is_postgres() { postgres } else { sqlite };
    app.db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("installing `{sql}`: {e}"));
}

/// A trigger that makes every statement writing `table` fail when `when` holds
/// (`NEW.<column>` in both dialects).
async fn refuse(app: &TestApp, event: &str, table: &str, when: &str) {
    install(
        app,
        &format!(
            "CREATE TRIGGER refuse_{table} BEFORE {event} ON {table} WHEN {when} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ),
        &format!(
            "CREATE FUNCTION refuse_{table}() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_{table} BEFORE {event} ON {table} FOR EACH ROW WHEN ({when}) \
             EXECUTE FUNCTION refuse_{table}()"
        ),
    )
    .await;
}

async fn allow(app: &TestApp, table: &str) {
    install(app, &format!("DROP TRIGGER refuse_{table}"), &format!("DROP TRIGGER refuse_{table} ON {table}")).await;
}

/// Every read that parses stored flows still answers.
async fn reads_keep_working(app: &TestApp) {
    let flows = app.ok(&app.admin(), "{ flows { key version status } }", json!({})).await;
    assert_eq!(flows["flows"], json!([{ "key": "welcome", "version": 1, "status": "ACTIVE" }]));
    app.start_as("ada", "welcome").await;
    let mine = app.ok(&app.user("ada"), "{ onboardings { flowKey status } }", json!({})).await;
    assert_eq!(mine["onboardings"], json!([{ "flowKey": "welcome", "status": "IN_PROGRESS" }]));
}

async fn a_published_version_that_does_not_read_back_is_not_saved(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    // Once stored, the definition of `broken` is replaced by one that does not parse (as a
    // definition the database stores differently from what was sent would be).
    install(
        &app,
        "CREATE TRIGGER corrupt AFTER INSERT ON flows WHEN NEW.key = 'broken' \
         BEGIN UPDATE flows SET definition = '{}' WHERE id = NEW.id; END",
        "CREATE FUNCTION corrupt() RETURNS trigger AS $$ BEGIN \
         UPDATE flows SET definition = '{}'::jsonb WHERE id = NEW.id; RETURN NULL; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER corrupt AFTER INSERT ON flows FOR EACH ROW WHEN (NEW.key = 'broken') EXECUTE FUNCTION corrupt()",
    )
    .await;
    let code = app.code(Some(&app.admin()), PUBLISH, json!({ "d": sample_flow("broken") })).await;
    assert_eq!(code, "INTERNAL");
    assert_eq!(app.count("SELECT COUNT(*) FROM flows WHERE key = 'broken'").await, 0, "nothing was saved");
    reads_keep_working(&app).await;
    // The next publish of the key is version 1: the failed one took nothing.
    install(&app, "DROP TRIGGER corrupt", "DROP TRIGGER corrupt ON flows").await;
    let published = app.ok(&app.admin(), PUBLISH, json!({ "d": sample_flow("broken") })).await;
    assert_eq!(published["publishFlow"], json!({ "key": "broken", "version": 1 }));
}

async fn a_deprecation_that_fails_after_its_update_is_not_saved(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    // A version stored before definitions had to read back (as the 300-deep audiences of
    // the incident were): deprecating it reads it back, which fails.
    install(
        &app,
        "INSERT INTO flows (key, version, status, scope, title, definition, created_at) \
         VALUES ('legacy', 1, 'ACTIVE', 'USER', 'Legacy', '{}', '2026-01-01 00:00:00+00:00')",
        "INSERT INTO flows (key, version, status, scope, title, definition, created_at) \
         VALUES ('legacy', 1, 'ACTIVE', 'USER', 'Legacy', '{}'::jsonb, '2026-01-01 00:00:00+00:00')",
    )
    .await;
    let query = "mutation { deprecateFlow(key: \"legacy\", version: 1) { status } }";
    assert_eq!(app.code(Some(&app.admin()), query, json!({})).await, "INTERNAL");
    assert_eq!(app.text("SELECT status FROM flows WHERE key = 'legacy'").await, "ACTIVE", "the update was undone");
    // A version that reads back deprecates as before.
    let query = "mutation { deprecateFlow(key: \"welcome\", version: 1) { status } }";
    assert_eq!(app.ok(&app.admin(), query, json!({})).await["deprecateFlow"]["status"], "DEPRECATED");
}

fn create_experiment(variants: Value) -> (String, Value) {
    let query = "mutation($v: [VariantInput!]!) { createExperiment(key: \"trial\", flowKey: \"welcome\", variants: $v) \
                 { key variants { name weight } } }";
    (query.to_string(), json!({ "v": variants }))
}

async fn an_experiment_whose_variants_fail_is_not_created(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    app.publish(sample_flow("welcome")).await;
    // The experiment row is written first, then its variants, which the database refuses.
    refuse(&app, "INSERT", "experiment_variants", "NEW.name = 'boom'").await;
    let variants =
        json!([{ "name": "control", "version": 1, "weight": 50 }, { "name": "boom", "version": 2, "weight": 50 }]);
    let (query, vars) = create_experiment(variants.clone());
    assert_eq!(app.code(Some(&app.admin()), &query, vars.clone()).await, "INTERNAL");
    assert_eq!(app.count("SELECT COUNT(*) FROM experiments").await, 0, "no experiment without its variants");
    assert_eq!(app.count("SELECT COUNT(*) FROM experiment_variants").await, 0);
    // So the same key can be created once the database accepts it.
    allow(&app, "experiment_variants").await;
    let created = app.ok(&app.admin(), &query, vars).await;
    assert_eq!(created["createExperiment"]["variants"].as_array().map(Vec::len), Some(2));
}

async fn experiment_weights_change_all_together_or_not_at_all(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    app.publish(sample_flow("welcome")).await;
    let variants =
        json!([{ "name": "control", "version": 1, "weight": 50 }, { "name": "treatment", "version": 2, "weight": 50 }]);
    let (query, vars) = create_experiment(variants);
    app.ok(&app.admin(), &query, vars).await;
    // Weights are written variant by variant; the second write is refused.
    refuse(&app, "UPDATE", "experiment_variants", "NEW.name = 'treatment'").await;
    let set = "mutation($w: [VariantWeightInput!]!) { setExperimentWeights(key: \"trial\", weights: $w) { key } }";
    let weights = json!({ "w": [{ "name": "control", "weight": 10 }, { "name": "treatment", "weight": 90 }] });
    assert_eq!(app.code(Some(&app.admin()), set, weights.clone()).await, "INTERNAL");
    let stored = app.rows("SELECT CAST(weight AS TEXT) FROM experiment_variants ORDER BY name").await;
    assert_eq!(stored, ["50", "50"], "neither weight changed");
    allow(&app, "experiment_variants").await;
    app.ok(&app.admin(), set, weights).await;
    let stored = app.rows("SELECT CAST(weight AS TEXT) FROM experiment_variants ORDER BY name").await;
    assert_eq!(stored, ["10", "90"]);
}
