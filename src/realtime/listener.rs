//! The PostgreSQL side of fan-out: LISTEN on the shared channel and wake local watchers.
//! When the connection drops, it reconnects and wakes every local watcher to re-send its
//! state, so a notification missed while disconnected costs nothing.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;

use super::{Announcement, CHANNEL, Hub};

/// The application_name of the listening connection, visible in pg_stat_activity.
pub const APPLICATION_NAME: &str = "onramp-listener";

/// Connects and starts listening, then keeps listening in the background. Returns once
/// the first LISTEN is in place, so an instance serves no subscriber that could miss a
/// change made elsewhere.
pub async fn spawn_listener(
    database_url: &str,
    hub: Arc<Hub>,
    instance: String,
) -> Result<tokio::task::JoinHandle<()>, sea_orm::sqlx::Error> {
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let url = format!("{database_url}{separator}application_name={APPLICATION_NAME}");
    let mut listener = listen(&url).await?;
    hub.set_listening(true);
    Ok(tokio::spawn(async move {
        loop {
            pump(&mut listener, &hub, &instance).await;
            hub.set_listening(false);
            tracing::warn!("change listener lost its connection");
            let mut backoff = Duration::from_millis(100);
            listener = loop {
                match listen(&url).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener cannot connect; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            tracing::info!("change listener reconnected; re-sending every subscriber's state");
            hub.set_listening(true);
            hub.resync_all();
        }
    }))
}

async fn listen(url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Delivers notifications until the connection drops.
async fn pump(listener: &mut PgListener, hub: &Hub, instance: &str) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match serde_json::from_str::<Announcement>(notification.payload()) {
                // This instance already woke its own watchers before notifying.
                Ok(a) if a.i == instance => {}
                Ok(a) => {
                    if a.f {
                        hub.flows_changed();
                    }
                    a.s.iter().for_each(|s| hub.changed(s));
                }
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed change notification"),
            },
            Ok(None) | Err(_) => return,
        }
    }
}
