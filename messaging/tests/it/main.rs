//! Messaging against Apache Pulsar and the real PostgreSQL: each test gets a namespace of its own
//! on the test run's broker (or, to kill it, a broker of its own) and a fresh database.

mod delivery;
mod failures;
mod recovery;
mod registry;
mod tracing;

use eventstore::outbox;
use messaging::broker::{Standalone, StandaloneSettings};
use messaging::consume::{self, Backoff, ConsumerSettings, Handler, HandlerError, Incoming};
use messaging::relay::{self, RelaySettings};
use messaging::{Client, PulsarSettings, effects};
use schemas::commands::RegisterPartner;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A client, its broker if the test has one of its own, and a migrated database with an
/// `effects` table the test handler writes.
struct Fixture {
    broker: Option<Standalone>,
    client: Arc<Client>,
    pool: PgPool,
    shutdown: CancellationToken,
}

impl Fixture {
    /// On a namespace of its own on the test run's broker.
    async fn start(db: PgPool) -> Fixture {
        Self::with(None, messaging::testing::client().await, db).await
    }

    /// On an Apache Pulsar standalone of its own, for a test that kills it.
    async fn with_own_broker(db: PgPool) -> Fixture {
        let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("broker-{}", Uuid::new_v4()));
        let broker = Standalone::start(&StandaloneSettings::in_dir(data_dir))
            .await
            .expect("start Apache Pulsar (bash scripts/setup.sh fetches it)");
        let settings = PulsarSettings::new(broker.url(), broker.admin_url());
        messaging::testing::provision(&settings).await;
        let client = Arc::new(Client::connect(settings).await.expect("connect"));
        Self::with(Some(broker), client, db).await
    }

    fn broker(&mut self) -> &mut Standalone {
        self.broker.as_mut().expect("a broker of the test's own")
    }

    async fn with(broker: Option<Standalone>, client: Arc<Client>, db: PgPool) -> Fixture {
        let pool = messaging::testing::pool(db, 20).await;
        eventstore::migrate(&pool).await.expect("migrate");
        sqlx::raw_sql(
            "create table effects (
                 seq        bigint generated always as identity primary key,
                 consumer   text   not null,
                 key        text   not null,
                 message_id uuid   not null,
                 body       text   not null,
                 txid       bigint not null default txid_current()
             )",
        )
        .execute(&pool)
        .await
        .expect("effects table");
        Fixture {
            broker,
            client,
            pool,
            shutdown: CancellationToken::new(),
        }
    }

    fn consumer(&self, settings: ConsumerSettings, handler: Arc<Recorder>) -> JoinHandle<()> {
        let run = consume::run(
            self.client.clone(),
            self.pool.clone(),
            settings,
            handler,
            self.shutdown.clone(),
        );
        tokio::spawn(async move { run.await.expect("consumer runner") })
    }

    /// A relay of the fixture's outbox, woken by its notifications.
    fn relay(&self, settings: RelaySettings) -> JoinHandle<Result<(), messaging::Error>> {
        self.relay_on(outbox::CHANNEL, None, settings)
    }

    /// A relay of the fixture's outbox woken on `channel`, taking what `handed` hands it.
    fn relay_on(
        &self,
        channel: &'static str,
        handed: Option<tokio::sync::mpsc::UnboundedReceiver<outbox::Handed>>,
        settings: RelaySettings,
    ) -> JoinHandle<Result<(), messaging::Error>> {
        let (client, pool) = (self.client.clone(), self.pool.clone());
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let wakeup = eventstore::Notifications::new(&pool).wakeup(channel).await;
            relay::run(client, pool, wakeup, handed, settings, shutdown).await
        })
    }

    /// The effects in commit order: (consumer, key, message id, body).
    async fn effects(&self) -> Vec<(String, String, Uuid, String)> {
        sqlx::query_as("select consumer, key, message_id, body from effects order by seq")
            .fetch_all(&self.pool)
            .await
            .expect("effects")
    }

    async fn wait_for_effects(
        &self,
        count: usize,
        within: Duration,
    ) -> Vec<(String, String, Uuid, String)> {
        let deadline = Instant::now() + within;
        loop {
            let effects = self.effects().await;
            if effects.len() >= count {
                return effects;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} effects after {within:?}",
                effects.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A message of the test topic, carrying `body` and keyed by `key`.
fn message(key: &str, body: &str) -> outbox::Message {
    let command = RegisterPartner {
        partner_id: Uuid::new_v4(),
        name: body.to_owned(),
        email: "partner@example.com".to_owned(),
        payout_account: "acct".to_owned(),
    };
    let properties = effects::first_of_flow(Uuid::new_v4(), &command, None, None);
    effects::outgoing(&command, key, &properties).expect("encode")
}

fn settings(subscription: &str) -> ConsumerSettings {
    ConsumerSettings {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
        ..ConsumerSettings::new(subscription)
    }
}

/// What the test handler does with a body: write the effect, or fail as scripted.
#[derive(Debug, Clone)]
enum Script {
    /// Fail transiently this many more times, then succeed.
    FailTransiently(u32),
    /// Fail transiently forever.
    Poison,
    /// Lose a race with a concurrent writer this many more times, then succeed.
    Conflicts(u32),
    /// Take this long, then succeed.
    Slow(Duration),
    /// Fail permanently.
    Reject,
}

/// Writes one `effects` row per message in the runner's transaction, and records every attempt.
#[derive(Debug, Default)]
struct Recorder {
    name: String,
    script: Mutex<HashMap<String, Script>>,
    attempts: Mutex<HashMap<String, Vec<Instant>>>,
    /// The trace context the handler ran in, per body.
    traceparents: Mutex<HashMap<String, Option<String>>>,
    /// When each body's last attempt ended.
    ends: Mutex<HashMap<String, Instant>>,
    /// Every message in one lane (named by its email), whatever its key.
    one_lane: bool,
}

impl Recorder {
    fn named(name: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_owned(),
            ..Recorder::default()
        })
    }

    /// A recorder that handles every message in one lane.
    fn one_lane(name: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_owned(),
            one_lane: true,
            ..Recorder::default()
        })
    }

    /// (start of the first attempt, end of the last) of a body.
    fn span(&self, body: &str) -> (Instant, Instant) {
        let start = self.attempts(body)[0];
        let end = self.ends.lock().expect("lock")[body];
        (start, end)
    }

    fn script(self: Arc<Self>, body: &str, script: Script) -> Arc<Self> {
        self.script
            .lock()
            .expect("lock")
            .insert(body.to_owned(), script);
        self
    }

    /// Handles `body` as any other from now on: the bug it met is fixed.
    fn unscript(&self, body: &str) {
        self.script.lock().expect("lock").remove(body);
    }

    fn attempts(&self, body: &str) -> Vec<Instant> {
        self.attempts
            .lock()
            .expect("lock")
            .get(body)
            .cloned()
            .unwrap_or_default()
    }
}

impl Handler for Recorder {
    type Message = RegisterPartner;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<RegisterPartner>,
    ) -> Result<(), HandlerError> {
        let body = incoming.message.name.clone();
        self.attempts
            .lock()
            .expect("lock")
            .entry(body.clone())
            .or_default()
            .push(Instant::now());
        self.traceparents
            .lock()
            .expect("lock")
            .insert(body.clone(), messaging::current_traceparent());
        let script = self.script.lock().expect("lock").get(&body).cloned();
        match script {
            Some(Script::FailTransiently(n)) if n > 0 => {
                self.script
                    .lock()
                    .expect("lock")
                    .insert(body, Script::FailTransiently(n - 1));
                return Err(HandlerError::Transient("scripted transient failure".into()));
            }
            Some(Script::Conflicts(n)) if n > 0 => {
                self.script
                    .lock()
                    .expect("lock")
                    .insert(body, Script::Conflicts(n - 1));
                return Err(HandlerError::Conflict("scripted conflict".into()));
            }
            Some(Script::Slow(pause)) => tokio::time::sleep(pause).await,
            Some(Script::Poison) => return Err(HandlerError::Transient("scripted poison".into())),
            Some(Script::Reject) => {
                return Err(HandlerError::Permanent {
                    code: "scripted".into(),
                    reason: "scripted rejection".into(),
                });
            }
            _ => {}
        }
        sqlx::query(
            "insert into effects (consumer, key, message_id, body) values ($1, $2, $3, $4)",
        )
        .bind(&self.name)
        .bind(&incoming.key)
        .bind(incoming.properties.message_id)
        .bind(&body)
        .execute(&mut *tx)
        .await?;
        self.ends.lock().expect("lock").insert(body, Instant::now());
        Ok(())
    }

    fn lane(&self, message: &RegisterPartner, key: &str) -> String {
        if self.one_lane {
            message.email.clone()
        } else {
            key.to_owned()
        }
    }
}

/// Messages enqueued into the outbox in one transaction, for a relay to publish.
async fn enqueue(pool: &PgPool, messages: &[outbox::Message]) {
    let mut tx = pool.begin().await.expect("begin");
    outbox::enqueue(&mut tx, messages).await.expect("enqueue");
    tx.commit().await.expect("commit");
}
