//! Cancellation safety: a use case dropped at any await (a closed socket, a timeout) must
//! leave no pooled connection inside a transaction, so the next borrower of that
//! connection is not hurt. The engine under test has a pool of two connections, so a
//! connection left mid-transaction is soon handed to someone else.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use onramp::domain::{Command, Limits, Owner, Source};
use onramp::persistence;
use onramp::service::{EventInput, Onramp, Party};
use serde_json::json;

use crate::both;
use crate::common::{TestApp, sample_flow};

both!(
    requests_dropped_at_any_await_leave_no_connection_mid_transaction,
    a_write_dropped_once_it_committed_is_still_announced,
);

/// A small deterministic generator (xorshift), so a failing run can be repeated by seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn party(subject: &str) -> Party {
    Party { subject: subject.to_string(), workspace: None }
}

fn event(id: String, subject: &str, name: &str) -> EventInput {
    EventInput {
        id,
        subject_id: Some(subject.to_string()),
        workspace_id: None,
        name: name.to_string(),
        properties: json!({}),
        occurred_at: None,
    }
}

/// Runs `work` until it has waited `n` times (or finishes), then drops it right there, at
/// its n-th await: every await of a use case is as likely a place to be dropped as any.
async fn drop_at_await<F: Future>(n: u64, work: F) {
    let mut work = std::pin::pin!(work);
    let mut left = n;
    std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        Poll::Ready(_) => Poll::Ready(()),
        Poll::Pending if left <= 1 => Poll::Ready(()),
        Poll::Pending => {
            left -= 1;
            Poll::Pending
        }
    })
    .await
}

/// Drops `work` at a point `r` chooses: at one of its first 40 awaits, or when a timer
/// of up to 30 ms runs out (a timeout or a closed socket), unless it finished first.
async fn drop_at_random<F: Future>(r: &mut Random, work: F) {
    if r.below(4) > 0 {
        drop_at_await(1 + r.below(40), work).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_micros(r.below(30_000)), work).await;
    }
}

/// Whether any connection of the pool is inside a transaction. It takes every connection
/// of the pool at once (a connection comes back to the pool only once its release,
/// which sends any rollback a drop queued, is done) and asks each: on PostgreSQL a
/// SAVEPOINT fails outside a transaction, on SQLite a BEGIN fails inside one.
async fn open_transactions(db: &sea_orm::DatabaseConnection, size: usize) -> usize {
    use sea_orm::sqlx::{self, Executor};
    let mut open = 0;
    if app_is_postgres(db) {
        let pool = db.get_postgres_connection_pool();
        let mut held = Vec::new();
        for _ in 0..size {
            held.push(pool.acquire().await.expect("acquire"));
        }
        for conn in &mut held {
            if conn.execute(sqlx::raw_sql("SAVEPOINT probe")).await.is_ok() {
                open += 1;
                conn.execute(sqlx::raw_sql("ROLLBACK")).await.expect("rollback");
            }
        }
    } else {
        let pool = db.get_sqlite_connection_pool();
        let mut held = Vec::new();
        for _ in 0..size {
            held.push(pool.acquire().await.expect("acquire"));
        }
        for conn in &mut held {
            match conn.execute(sqlx::raw_sql("BEGIN")).await {
                Ok(_) => drop(conn.execute(sqlx::raw_sql("ROLLBACK")).await.expect("rollback")),
                Err(_) => {
                    open += 1;
                    conn.execute(sqlx::raw_sql("ROLLBACK")).await.expect("rollback");
                }
            }
        }
    }
    open
}

fn app_is_postgres(db: &sea_orm::DatabaseConnection) -> bool {
    sea_orm::ConnectionTrait::get_database_backend(db) == sea_orm::DbBackend::Postgres
}

/// One use case of each kind, chosen by `n`: reads of owners not enrolled (which open a
/// read transaction), writes that enroll, events, attribute changes.
async fn use_case(onramp: &Onramp, n: u64, who: &str) -> Result<(), String> {
    let flow = "welcome";
    let fail = |e: onramp::error::AppError| format!("{who}: {e:?}");
    match n % 6 {
        0 => onramp.status(&party(who), flow).await.map(drop).map_err(fail),
        1 => onramp
            .onboardings(&Owner::user(who, &Limits::default()).map_err(|e| e.to_string())?)
            .await
            .map(drop)
            .map_err(fail),
        2 => onramp
            .run(&party(who), flow, Command::CompleteStep { step: "verify_email".into(), metadata: None }, Source::User)
            .await
            .map(drop)
            .map_err(fail),
        3 => onramp.run(&party(who), flow, Command::Start, Source::User).await.map(drop).map_err(fail),
        4 => onramp.track_events(vec![event(format!("{who}-e"), who, "user.verified")]).await.map(drop).map_err(fail),
        _ => onramp
            .set_attributes(
                &Owner::user(who, &Limits::default()).map_err(|e| e.to_string())?,
                json!({ "plan": "team" }),
                true,
            )
            .await
            .map(drop)
            .map_err(fail),
    }
}

async fn requests_dropped_at_any_await_leave_no_connection_mid_transaction(app: TestApp) {
    let mut flow = sample_flow("welcome");
    flow["steps"][0]["trigger"] = json!({ "event": "user.verified" });
    app.publish(flow).await;
    const POOL: usize = 2;
    let db = persistence::connect(app.database_url(), POOL as u32).await.expect("connect");
    let onramp = Onramp::new(db);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let mut r = Random(seed | 1);

    // 1,000 use cases dropped mid-flight (and the transactions they open, on their own),
    // over a few subjects; after each, no connection of the pool is inside a transaction.
    for i in 0..1000u64 {
        let who = format!("dropped-{}", r.below(20));
        let kind = r.below(8);
        let db = onramp.db();
        match kind {
            6 => drop_at_random(&mut r, async { drop(persistence::begin_read(db).await) }).await,
            7 => drop_at_random(&mut r, async { drop(persistence::begin_write(db).await) }).await,
            _ => drop_at_random(&mut r, use_case(&onramp, kind, &who)).await,
        }
        let open = open_transactions(onramp.db(), POOL).await;
        assert_eq!(open, 0, "drop {i} (kind {kind}, seed {seed}) left a pooled connection inside a transaction");
    }

    // Then 1,000 unrelated use cases, each for its own subject, on the same pool: every
    // one succeeds, and what they wrote is committed (another pool sees it).
    let mut failures = Vec::new();
    for i in 0..1000u64 {
        if let Err(e) = use_case(&onramp, i, &format!("after-{i}")).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 use cases failed after the drops: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let attributes_set = app
        .count(
            "SELECT COUNT(*) FROM subjects WHERE external_id LIKE 'after-%' AND CAST(attributes AS TEXT) LIKE '%team%'",
        )
        .await;
    assert_eq!(attributes_set, 1000 / 6, "every attribute change is committed");
}

async fn a_write_dropped_once_it_committed_is_still_announced(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    const POOL: usize = 2;
    let db = persistence::connect(app.database_url(), POOL as u32).await.expect("connect");
    let onramp = Onramp::new(db);
    // A write dropped at each of its awaits in turn, the commit's among them.
    for n in 1..=60u64 {
        let who = format!("writer-{n}");
        let mut watch = onramp.realtime().hub().watch(&who);
        drop_at_await(n, onramp.run(&party(&who), "welcome", Command::Start, Source::User)).await;
        // Once every connection is back in the pool, the write has committed or never will.
        assert_eq!(open_transactions(onramp.db(), POOL).await, 0);
        let enrolled =
            app.count(&format!("SELECT COUNT(*) FROM enrollments e JOIN subjects s ON s.id = e.subject_id WHERE s.external_id = '{who}'")).await;
        if enrolled == 1 {
            let heard = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
            assert!(matches!(heard, Ok(Some(_))), "write {n} committed but its watchers never heard of it");
        }
    }
}
