//! Fast mode: the task that follows the invalidation channel into the local
//! tier, and keeps the tier *live* only while no message can have been
//! missed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::prelude::*;

use crate::cache::store::local::LocalTier;

/// How often the subscription task retries subscribing while down, and
/// checks whether the store is still in use.
pub const SUBSCRIBE_RETRY: Duration = Duration::from_millis(500);

/// Invalidation messages buffered for the subscription task.
pub const SUBSCRIBER_BUFFER: usize = 4096;

/// Fast mode: follows the invalidation channel into `local` for as long as
/// the store exists. The tier is live only between a confirmed SUBSCRIBE
/// and the next sign that a message may have been missed; on every exit
/// it is left down.
pub async fn follow<T: Send + Sync>(
    store: Weak<T>,
    local: Arc<LocalTier>,
    client: Client,
    channel: String,
) {
    follow_inline(&store, &local, &client, &channel).await;
    local.set_live(false);
    let _ = client.quit().await;
}

async fn follow_inline<T>(store: &Weak<T>, local: &LocalTier, client: &Client, channel: &str) {
    use tokio::sync::broadcast::error::RecvError;
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    let mut errors = client.error_rx();
    let init = client.clone();
    tokio::spawn(async move { init.init().await.map(|_| ()) });
    let mut retry = tokio::time::interval(SUBSCRIBE_RETRY);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => match message.value.as_str() {
                    Some(text) => local.hear(&text),
                    None => local.reset("a non-text invalidation message"),
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "invalidation messages dropped; local tier reset");
                    local.reset("invalidation messages were dropped");
                }
                Err(RecvError::Closed) => return,
            },
            event = reconnects.recv() => {
                local.set_live(false);
                if matches!(event, Err(RecvError::Closed)) {
                    return;
                }
                subscribe(client, channel, local).await;
            }
            event = errors.recv() => {
                local.set_live(false);
                if matches!(event, Err(RecvError::Closed)) {
                    return;
                }
            }
            _ = retry.tick() => {
                if store.strong_count() == 0 {
                    return;
                }
                if !local.is_live() {
                    if client.is_connected() {
                        subscribe(client, channel, local).await;
                    }
                } else if !answers(client).await {
                    // A half-open connection delivers nothing and reports
                    // nothing: only a round trip on it tells.
                    tracing::warn!("fast mode: the invalidation subscription stopped answering");
                    local.set_live(false);
                }
            }
        }
    }
}

/// A PING on the subscribed connection, answered within the retry period.
async fn answers(client: &Client) -> bool {
    matches!(
        tokio::time::timeout(SUBSCRIBE_RETRY, client.ping::<Value>(None)).await,
        Ok(Ok(_))
    )
}

async fn subscribe(client: &Client, channel: &str, local: &LocalTier) {
    match tokio::time::timeout(SUBSCRIBE_RETRY, client.subscribe(channel)).await {
        Ok(Ok(())) => {
            local.set_live(true);
            tracing::info!(channel, "fast mode: following invalidations");
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "fast mode: cannot subscribe to invalidations"),
        Err(_) => tracing::warn!("fast mode: subscribing to invalidations timed out"),
    }
}
