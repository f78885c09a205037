//! Archiving: a saga that ended long enough ago leaves the hot tables and is still shown by id,
//! and a trigger redelivered after that does not start it again.

use super::runtime::call;
use super::{answer, conversion, database, eur, feed, saga};
use axum::http::StatusCode;
use sagas::definition::{Answer, Input, Status};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

async fn hot_events(pool: &PgPool, saga_id: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from events where stream_id = $1")
        .bind(sagas::wire::stream_id(saga_id))
        .fetch_one(pool)
        .await
        .expect("events")
}

#[sqlx::test(migrations = false)]
async fn an_ended_saga_is_archived_and_still_shown_by_id(db: PgPool) {
    let pool = database(db).await;
    let router = sagas::api::router(pool.clone());
    let start = |(saga_id, definition, data)| Input::Start {
        saga_id,
        definition,
        data,
        at: 0,
    };
    let (ended, definition, data) = conversion(10_000);
    feed(&pool, ended, start((ended, definition, data.clone()))).await;
    for _ in 0..10 {
        if saga(&pool, ended).await.status == Status::Completed {
            break;
        }
        answer(&pool, ended, Answer::Succeeded { amount: eur(500) }).await;
    }
    let running = conversion(10_000);
    let running_id = running.0;
    feed(&pool, running_id, start(running)).await;
    let (status, shown) = call(&router, "GET", &format!("/sagas/{ended}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["saga"]["status"], "completed");

    // Too young yet: nothing moves. An hour later, only the saga that ended does.
    let age = Duration::from_secs(3600);
    assert_eq!(
        sagas::archive::archive_ended(&pool, age)
            .await
            .expect("archive"),
        0
    );
    sqlx::query("update sagas set updated_at = updated_at - interval '2 hours'")
        .execute(&pool)
        .await
        .expect("age the sagas");
    assert_eq!(
        sagas::archive::archive_ended(&pool, age)
            .await
            .expect("archive"),
        1
    );

    assert_eq!(
        hot_events(&pool, ended).await,
        0,
        "its log left the hot log"
    );
    assert!(hot_events(&pool, running_id).await > 0);
    let (_, listed) = call(&router, "GET", "/sagas", None).await;
    let ids: Vec<&str> = listed["sagas"]
        .as_array()
        .expect("sagas")
        .iter()
        .map(|s| s["saga_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [running_id.to_string()],
        "listings cover the hot sagas"
    );

    let (status, archived) = call(&router, "GET", &format!("/sagas/{ended}"), None).await;
    assert_eq!(status, StatusCode::OK, "{archived}");
    assert!(archived["saga"]["archived_at"].is_string());
    assert_eq!(archived["saga"]["status"], "completed");
    assert_eq!(archived["steps"], shown["steps"]);
    assert_eq!(archived["timeline"], shown["timeline"]);
    let (status, _) = call(&router, "GET", &format!("/streams/saga-{ended}"), None).await;
    assert_eq!(status, StatusCode::OK, "its stream is read by id");

    // The trigger comes again: an archived saga takes no more input.
    assert_eq!(
        feed(&pool, ended, start((ended, definition, data))).await,
        0
    );
    assert_eq!(hot_events(&pool, ended).await, 0);
    let hot: i64 = sqlx::query_scalar("select count(*) from sagas where saga_id = $1")
        .bind(ended)
        .fetch_one(&pool)
        .await
        .expect("sagas");
    assert_eq!(hot, 0, "not started again");
}
