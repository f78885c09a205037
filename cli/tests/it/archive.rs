//! `pulsaga serve sagas --archive-after-days`: the coordinator archives the sagas that ended
//! longer ago than that and still shows them by id; a value that is not a number of days is
//! refused at start.

use super::{Database, free_address, serve, wait_for};
use sagas::coordinator::{self, Cause};
use sagas::definition::{Answer, Input, Status};
use sqlx::PgPool;
use uuid::Uuid;

/// Feeds one input in its own transaction, as the coordinator's consumers do.
async fn feed(pool: &PgPool, saga_id: Uuid, input: Input) {
    let mut tx = pool.begin().await.expect("begin");
    let cause = Cause {
        message_id: Some(Uuid::new_v4()),
        ..Cause::default()
    };
    coordinator::feed(&mut tx, saga_id, &input, &cause)
        .await
        .expect("feed");
    tx.commit().await.expect("commit");
}

/// An order-to-payment saga whose every step succeeded, as the coordinator records it.
async fn completed_saga(pool: &PgPool) -> Uuid {
    let (saga_id, definition, data) = sagas::testing::conversion(500);
    let amount = data.order.as_ref().expect("an order").amount.clone();
    let start = Input::Start {
        saga_id,
        definition,
        data,
        at: 0,
    };
    feed(pool, saga_id, start).await;
    loop {
        let mut conn = pool.acquire().await.expect("connection");
        let (saga, _, _) = coordinator::load(&mut conn, saga_id).await.expect("load");
        let saga = saga.expect("the saga started");
        if saga.status == Status::Completed {
            return saga_id;
        }
        let pending = saga.pending.expect("a command is pending");
        let reply = Input::Reply {
            command_id: pending.command_id,
            message_id: Uuid::new_v4(),
            answer: Answer::Succeeded {
                amount: Some(amount.clone()),
            },
            at: coordinator::now_micros(),
        };
        feed(pool, saga_id, reply).await;
    }
}

#[tokio::test]
async fn the_coordinator_archives_sagas_that_ended_long_enough_ago() {
    let pulsar = messaging::testing::settings().await;
    let database = Database::create().await;
    let pool = database.pool().await;
    let service = sagas::service(sagas::archive::DEFAULT_AGE);
    messaging::host::migrate(&pool, &service)
        .await
        .expect("migrate");
    let saga_id = completed_saga(&pool).await;
    sqlx::query("update sagas set updated_at = now() - interval '2 days'")
        .execute(&pool)
        .await
        .expect("age it");

    let listen = free_address();
    let args = ["--archive-after-days", "1.5"];
    let mut process = serve("sagas", &args, &database, &pulsar, listen);
    let shown = wait_for(&format!("http://{listen}/sagas/{saga_id}"), |body| {
        body["saga"]["archived_at"].is_string()
    })
    .await;
    assert_eq!(shown["saga"]["status"], "completed");
    assert!(!shown["timeline"].as_array().expect("timeline").is_empty());
    let hot: i64 = sqlx::query_scalar("select count(*) from sagas")
        .fetch_one(&pool)
        .await
        .expect("sagas");
    assert_eq!(hot, 0);
    process.start_kill().expect("stop");
    process.wait().await.expect("reap");

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["serve", "sagas", "--archive-after-days=-1"])
        .output()
        .await
        .expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("\"-1\" is not a number of days"),
        "{stderr}"
    );
    pool.close().await;
    database.drop().await;
}
