//! Waiting for work without polling hard: a worker waits on a PostgreSQL notification channel
//! (raised by a trigger at the commit of the transaction that queued the work) and wakes at once,
//! or after its fallback interval if a notification is lost (a reconnect drops them).
//!
//! A listener holds one of its pool's connections for as long as it listens, so a process listens
//! on one connection for all its workers ([`Notifications`]) instead of one per worker. The
//! process may also wake its own workers on a channel without the database ([`Notifications::wake`]):
//! what it committed itself needs no round trip through PostgreSQL to be known.

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long the listener waits before it connects again after failing to.
const RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// What the listener's task is asked to do.
enum Request {
    /// A worker asks to wait on any of these channels; its receiver goes here once they are
    /// listened to.
    Subscribe(Vec<String>, oneshot::Sender<watch::Receiver<()>>),
    /// Wake the process's workers on this channel.
    Wake(String),
}

/// The process's listener: one connection of the pool, listening on every channel a worker of
/// the process waits on. Cloning it shares the listener; it stops when every clone and every
/// [`Wakeup`] is gone.
#[derive(Debug, Clone)]
pub struct Notifications {
    requests: mpsc::UnboundedSender<Request>,
}

impl Notifications {
    /// Starts the listener on `pool`; it connects when a worker first asks for a channel.
    pub fn new(pool: &PgPool) -> Notifications {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(listen(pool.clone(), received));
        Notifications { requests }
    }

    /// A wakeup on `channel`, returned once the channel is listened to: a notification of any
    /// commit after this returns wakes it. If listening fails the worker still works, by its
    /// fallback interval.
    pub async fn wakeup(&self, channel: &str) -> Wakeup {
        self.wakeup_on(&[channel]).await
    }

    /// A wakeup on any of `channels` (see [`wakeup`](Self::wakeup)).
    pub async fn wakeup_on(&self, channels: &[&str]) -> Wakeup {
        let (reply, receiver) = oneshot::channel();
        let channels = channels.iter().map(|c| (*c).to_owned()).collect();
        let receiver = match self.requests.send(Request::Subscribe(channels, reply)) {
            Ok(()) => receiver.await.ok(),
            Err(_) => None,
        };
        Wakeup {
            receiver,
            _listener: self.clone(),
        }
    }

    /// Wakes this process's workers on `channel`, as a notification would; the database is not
    /// told, and other processes' workers are not woken.
    pub fn wake(&self, channel: &str) {
        let _ = self.requests.send(Request::Wake(channel.to_owned()));
    }
}

/// One worker's view of one channel.
#[derive(Debug)]
pub struct Wakeup {
    receiver: Option<watch::Receiver<()>>,
    /// Keeps the listener going while the worker waits.
    _listener: Notifications,
}

impl Wakeup {
    /// Returns at the next notification (or at once if one came since the last return), or after
    /// `fallback`. A burst of notifications wakes the worker once, not once per commit: they are
    /// for commits made before this returns, which the caller's next look sees.
    pub async fn wait(&mut self, fallback: Duration) {
        let notified = async {
            let changed = match &mut self.receiver {
                Some(receiver) => receiver.changed().await.is_ok(),
                None => false,
            };
            if !changed {
                // Not listening: only the fallback wakes the worker.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(fallback) => {}
        }
    }
}

/// The listener's task: subscribes workers, and passes each notification on to its channel's
/// workers. When the connection is lost every worker is woken, since notifications may have been
/// lost with it.
async fn listen(pool: PgPool, mut requests: mpsc::UnboundedReceiver<Request>) {
    // Each channel's workers, a sender each (a worker may wait on several channels).
    let mut channels: HashMap<String, Vec<watch::Sender<()>>> = HashMap::new();
    let mut listener: Option<PgListener> = None;
    let wake = |channels: &HashMap<String, Vec<watch::Sender<()>>>, channel: &str| {
        for sender in channels.get(channel).into_iter().flatten() {
            sender.send_replace(());
        }
    };
    let wake_all = |channels: &HashMap<String, Vec<watch::Sender<()>>>| {
        channels.values().flatten().for_each(|sender| {
            sender.send_replace(());
        });
    };
    loop {
        let notification = async {
            match &mut listener {
                Some(listener) => Some(listener.try_recv().await),
                None if channels.is_empty() => std::future::pending().await,
                None => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    None
                }
            }
        };
        tokio::select! {
            request = requests.recv() => match request {
                None => return,
                Some(Request::Wake(channel)) => wake(&channels, &channel),
                Some(Request::Subscribe(wanted, reply)) => {
                    let (sender, receiver) = watch::channel(());
                    let mut new = Vec::new();
                    for channel in wanted {
                        let senders = channels.entry(channel.clone()).or_default();
                        if senders.is_empty() {
                            new.push(channel);
                        }
                        senders.push(sender.clone());
                    }
                    match &mut listener {
                        Some(connected) if !new.is_empty() => {
                            if let Err(error) = connected.listen_all(new.iter().map(String::as_str)).await {
                                tracing::warn!(channels = ?new, %error, "cannot listen for notifications; polling instead");
                            }
                        }
                        Some(_) => {}
                        None => listener = connect(&pool, &channels).await,
                    }
                    let _ = reply.send(receiver);
                }
            },
            received = notification => match received {
                Some(Ok(Some(notification))) => wake(&channels, notification.channel()),
                // The connection was lost; the next receive reconnects.
                Some(Ok(None)) => wake_all(&channels),
                Some(Err(error)) => {
                    tracing::debug!(%error, "notification listener failed; connecting again");
                    listener = None;
                    wake_all(&channels);
                }
                None => {
                    listener = connect(&pool, &channels).await;
                    wake_all(&channels);
                }
            }
        }
    }
}

/// A listener on every channel in `channels`, or `None` (the workers poll meanwhile).
async fn connect<T>(pool: &PgPool, channels: &HashMap<String, T>) -> Option<PgListener> {
    let listening = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all(channels.keys().map(String::as_str))
            .await?;
        Ok::<_, sqlx::Error>(listener)
    };
    listening
        .await
        .inspect_err(|error| {
            tracing::warn!(%error, "cannot listen for notifications; polling until it can");
        })
        .ok()
}
