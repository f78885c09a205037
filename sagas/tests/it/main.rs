//! The coordinator against the real PostgreSQL: inputs fed in transactions the way its consumers,
//! timer worker and operators feed them, the commands it queues, its timers, its query API, and
//! deterministic replay of what it recorded, and recorded histories replayed against today's
//! definitions.

mod archive;
mod replayer;
mod runtime;

use sagas::coordinator::{self, Cause};
use sagas::definition::{Answer, Definition, Input, Money, Saga, SagaData};
use sagas::testing::conversion;
use sqlx::PgPool;
use uuid::Uuid;

async fn database(db: PgPool) -> PgPool {
    let service = sagas::service(sagas::archive::DEFAULT_AGE);
    messaging::testing::migrated(db, 8, &service).await
}

/// A conversion's saga id, and the input that starts its saga.
fn conversion_start() -> (Uuid, Input) {
    let (saga_id, definition, data) = conversion(10_000);
    let start = Input::Start {
        saga_id,
        definition,
        data,
        at: 0,
    };
    (saga_id, start)
}

/// Starts the saga with `data`, as its trigger would.
async fn start(
    pool: &PgPool,
    saga_id: Uuid,
    definition: &'static Definition,
    data: SagaData,
) -> usize {
    let input = Input::Start {
        saga_id,
        definition,
        data,
        at: 0,
    };
    feed(pool, saga_id, input).await
}

/// Feeds one input in its own transaction, as a consumer would.
async fn feed(pool: &PgPool, saga_id: Uuid, input: Input) -> usize {
    let mut tx = pool.begin().await.expect("begin");
    let cause = Cause {
        message_id: Some(Uuid::new_v4()),
        ..Cause::default()
    };
    let entries = coordinator::feed(&mut tx, saga_id, &input, &cause)
        .await
        .expect("feed");
    tx.commit().await.expect("commit");
    entries.len()
}

/// The commands queued so far: (topic, message id), in order.
async fn commands(pool: &PgPool) -> Vec<(String, Uuid)> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select topic, properties->>'message_id' from outbox order by id")
            .fetch_all(pool)
            .await
            .expect("outbox");
    rows.into_iter()
        .map(|(topic, id)| (topic, id.parse().expect("uuid")))
        .collect()
}

/// Answers the saga's pending command.
async fn answer(pool: &PgPool, saga_id: Uuid, answer: Answer) {
    let load = async || saga(pool, saga_id).await;
    let mut saga = load().await;
    if saga.awaiting_retry {
        // A refused compensation waits for its backoff timer: let it come due and fire.
        sqlx::query("update saga_timers set due_at = now() where saga_id = $1")
            .bind(saga_id)
            .execute(pool)
            .await
            .expect("fast-forward");
        let fired = coordinator::fire_due_timers(pool, None, 10)
            .await
            .expect("timers");
        assert_eq!(fired, 1, "the backoff timer");
        saga = load().await;
        assert!(!saga.awaiting_retry, "the next attempt went out");
    }
    let pending = saga.pending.expect("a command is pending");
    let input = Input::Reply {
        command_id: pending.command_id,
        message_id: Uuid::new_v4(),
        answer,
        at: coordinator::now_micros(),
    };
    feed(pool, saga_id, input).await;
}

/// The saga as its log stands.
async fn saga(pool: &PgPool, saga_id: Uuid) -> Saga {
    let mut conn = pool.acquire().await.expect("connection");
    coordinator::load(&mut conn, saga_id)
        .await
        .expect("load")
        .0
        .expect("the saga started")
}

fn eur(amount: i64) -> Option<Money> {
    Some(Money {
        amount,
        currency: "EUR".into(),
    })
}
