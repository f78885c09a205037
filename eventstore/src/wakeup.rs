//! Waiting for work without polling hard: a worker listens on a PostgreSQL notification channel
//! (raised by a trigger at the commit of the transaction that queued the work) and wakes at once,
//! or after its fallback interval if a notification is lost (a reconnect drops them).

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;

/// A listener on one channel; without a connection it only sleeps.
#[derive(Debug)]
pub struct Wakeup {
    listener: Option<PgListener>,
}

impl Wakeup {
    /// Listens on `channel`. If listening fails the worker still works, by its fallback interval.
    pub async fn listen(pool: &PgPool, channel: &str) -> Wakeup {
        let listener = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listener {
            Ok(listener) => Wakeup {
                listener: Some(listener),
            },
            Err(error) => {
                tracing::warn!(%channel, %error, "cannot listen for notifications; polling instead");
                Wakeup { listener: None }
            }
        }
    }

    /// Returns at the next notification (or at once if one came meanwhile), or after `fallback`.
    /// The notifications already received with it are taken too: they are for commits made
    /// before this returns, which the caller's next look sees, so a burst of commits wakes the
    /// worker once instead of once per commit.
    pub async fn wait(&mut self, fallback: Duration) {
        let Some(listener) = &mut self.listener else {
            tokio::time::sleep(fallback).await;
            return;
        };
        tokio::select! {
            received = listener.recv() => {
                if let Err(error) = received {
                    tracing::debug!(%error, "notification listener reconnecting");
                    tokio::time::sleep(fallback.min(Duration::from_millis(100))).await;
                }
                while listener.next_buffered().is_some() {}
            }
            _ = tokio::time::sleep(fallback) => {}
        }
    }
}
