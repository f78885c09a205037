//! Starting once per trigger, replies, timers, operators, crash-before-commit, and replay.

use super::{answer, commands, conversion, conversion_start, database, eur, feed, saga, start};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use messaging::consume::HandlerError;
use messaging::testing::respond;
use sagas::coordinator;
use sagas::definition::{Answer, CATALOGUE, Entry, Input, Sent};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub(super) async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    send(router, method, uri, body, None).await
}

/// An operator action as the BFF asks for it: the actor, from the admin's verified token, in a
/// header.
async fn act(router: &axum::Router, uri: &str, actor: Option<&str>) -> (StatusCode, Value) {
    send(router, "POST", uri, None, actor).await
}

async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    actor: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(actor) = actor {
        request = request.header("x-pulsaga-actor", actor);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let (status, _, bytes) = respond(router, request.body(body).expect("request")).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[sqlx::test(migrations = false)]
async fn a_trigger_delivered_twice_starts_one_saga(db: PgPool) {
    let pool = database(db).await;
    let (saga_id, start) = conversion_start();
    assert_eq!(
        feed(&pool, saga_id, start.clone()).await,
        2,
        "started, first command sent"
    );
    assert_eq!(feed(&pool, saga_id, start).await, 0);
    let queued = commands(&pool).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0, "campaign-budget-reservation");
    let timers: i64 = sqlx::query_scalar("select count(*) from saga_timers")
        .fetch_one(&pool)
        .await
        .expect("timers");
    assert_eq!(timers, 1);
}

#[sqlx::test(migrations = false)]
async fn replies_drive_the_saga_and_replay_reproduces_every_command(db: PgPool) {
    let pool = database(db).await;
    let (saga_id, definition, data) = conversion(10_000);
    start(&pool, saga_id, definition, data).await;
    answer(&pool, saga_id, Answer::Succeeded { amount: eur(500) }).await;
    answer(&pool, saga_id, Answer::Succeeded { amount: eur(500) }).await;
    answer(&pool, saga_id, rejected("payment_failed", "account closed")).await;
    answer(&pool, saga_id, Answer::Succeeded { amount: None }).await;
    answer(&pool, saga_id, Answer::Succeeded { amount: None }).await;
    answer(&pool, saga_id, Answer::Succeeded { amount: None }).await;

    let topics: Vec<String> = commands(&pool).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics,
        [
            "campaign-budget-reservation",
            "assign-commission-to-partner",
            "payments-request",
            "commission-reversal",
            "campaign-budget-release",
            "fail-tracking-events",
        ]
    );
    let status: String = sqlx::query_scalar("select status from sagas where saga_id = $1")
        .bind(saga_id)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(status, "compensated");
    let timers: i64 = sqlx::query_scalar("select count(*) from saga_timers")
        .fetch_one(&pool)
        .await
        .expect("timers");
    assert_eq!(timers, 0, "answered commands leave no timers");

    // Deterministic replay: the recorded inputs, fed to a fresh saga, send exactly the commands
    // that went to the outbox, ids included.
    let (_, log, _) = {
        let mut conn = pool.acquire().await.expect("connection");
        coordinator::load(&mut conn, saga_id).await.expect("load")
    };
    sagas::replay::replay(&CATALOGUE, &log).expect("the recorded log replays");
    let sent: Vec<&Sent> = sagas::replay::commands(&log).collect();
    let replayed_ids: Vec<Uuid> = sent.iter().map(|s| s.command_id).collect();
    let queued_ids: Vec<Uuid> = commands(&pool)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(replayed_ids, queued_ids);
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("select payload from outbox order by id")
        .fetch_all(&pool)
        .await
        .expect("payloads");
    let replayed_bodies: Vec<Vec<u8>> = sent
        .iter()
        .map(|s| sagas::wire::encode_command(&s.command).expect("encode").3)
        .collect();
    assert_eq!(replayed_bodies, bodies, "the same commands, byte for byte");
}

/// An input that waits for another's lock on its saga reads the log as that one left it: the
/// same reply again, fed while the first is in hand, changes nothing instead of losing a race.
#[sqlx::test(migrations = false)]
async fn an_input_waiting_for_its_saga_reads_what_the_one_before_wrote(db: PgPool) {
    let pool = database(db).await;
    let (saga_id, definition, data) = conversion(10_000);
    start(&pool, saga_id, definition, data).await;
    let pending = saga(&pool, saga_id)
        .await
        .pending
        .expect("a command is pending");
    let reply = Input::Reply {
        command_id: pending.command_id,
        message_id: Uuid::new_v4(),
        answer: Answer::Succeeded { amount: eur(500) },
        at: coordinator::now_micros(),
    };
    let mut first = pool.begin().await.expect("begin");
    let fed = coordinator::feed(&mut first, saga_id, &reply, &coordinator::Cause::default())
        .await
        .expect("the first reply");
    assert!(!fed.is_empty(), "the first reply moves the saga on");
    let second = tokio::spawn({
        let (pool, reply) = (pool.clone(), reply.clone());
        async move {
            let mut tx = pool.begin().await.expect("begin");
            let fed =
                coordinator::feed(&mut tx, saga_id, &reply, &coordinator::Cause::default()).await;
            tx.commit().await.expect("commit");
            fed.map(|entries| entries.len())
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second input never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.commit().await.expect("commit");
    let again = second.await.expect("second input");
    assert_eq!(
        again.expect("no conflict: it read the log after the first committed"),
        0,
        "the same reply again changes nothing"
    );
}

#[sqlx::test(migrations = false)]
async fn a_crash_before_commit_leaves_nothing_and_the_redelivery_does_it_once(db: PgPool) {
    let pool = database(db).await;
    let (saga_id, start) = conversion_start();
    // Decided, logged and queued, then the process dies before commit.
    let mut tx = pool.begin().await.expect("begin");
    let entries = coordinator::feed(&mut tx, saga_id, &start, &coordinator::Cause::default())
        .await
        .expect("feed");
    assert_eq!(entries.len(), 2);
    drop(tx);
    assert!(commands(&pool).await.is_empty());
    // The broker redelivers the trigger.
    feed(&pool, saga_id, start).await;
    let queued = commands(&pool).await;
    assert_eq!(queued.len(), 1);
    let Entry::StepCommandSent { sent, .. } = &entries[1] else {
        panic!("a command")
    };
    assert_eq!(
        queued[0].1, sent.command_id,
        "the same command id as the lost attempt chose"
    );
}

#[sqlx::test(migrations = false)]
async fn due_timers_fire_as_inputs(db: PgPool) {
    let pool = database(db).await;
    let (saga_id, definition, data) = conversion(10_000);
    start(&pool, saga_id, definition, data).await;
    assert_eq!(
        coordinator::fire_due_timers(&pool, None, 10)
            .await
            .expect("fire"),
        0,
        "not due yet"
    );
    sqlx::query("update saga_timers set due_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .expect("due");
    assert_eq!(
        coordinator::fire_due_timers(&pool, None, 10)
            .await
            .expect("fire"),
        1
    );
    let attempts: Vec<i32> = sqlx::query_scalar("select attempt from saga_timers")
        .fetch_all(&pool)
        .await
        .expect("timers");
    assert_eq!(attempts, [2], "the command was resent with a new timer");
    let queued = commands(&pool).await;
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].1, queued[1].1, "a resend keeps the command id");
}

/// A saga that started with a definition version this coordinator lacks (a newer one, during a
/// rolling deploy) is left alone: its input waits as in an outage (never dead-lettered) for a
/// coordinator that has the version, nothing is written, its timer waits without holding up the
/// others', and operators still see it. The listing shows each saga's version.
#[sqlx::test(migrations = false)]
async fn a_saga_of_a_version_not_in_the_catalogue_is_left_for_one_that_has_it(db: PgPool) {
    let pool = database(db).await;
    let router = sagas::api::router(pool.clone());
    let (saga_id, definition, data) = conversion(10_000);
    start(&pool, saga_id, definition, data).await;
    let (_, listed) = call(
        &router,
        "GET",
        "/sagas?type=order-to-payment&version=1",
        None,
    )
    .await;
    assert_eq!(listed["sagas"][0]["definition_version"], 1, "{listed}");
    let (_, none) = call(&router, "GET", "/sagas?version=2", None).await;
    assert_eq!(none["sagas"], serde_json::json!([]));

    sqlx::query(
        "update events
            set payload = convert_to(jsonb_set(convert_from(payload, 'UTF8')::jsonb,
                                               '{definition_version}', '9')::text, 'UTF8')
          where stream_id = $1 and version = 1",
    )
    .bind(sagas::wire::stream_id(saga_id))
    .execute(&pool)
    .await
    .expect("as if a newer coordinator had started it");
    let pending = {
        let mut conn = pool.acquire().await.expect("connection");
        coordinator::load(&mut conn, saga_id).await
    };
    let Err(HandlerError::Unavailable(why)) = pending else {
        panic!("an unknown version makes the input wait: {pending:?}");
    };
    assert!(why.contains("order-to-payment v9"), "{why}");
    let mut tx = pool.begin().await.expect("begin");
    let reply = Input::Reply {
        command_id: Uuid::new_v4(),
        message_id: Uuid::new_v4(),
        answer: Answer::Succeeded { amount: eur(500) },
        at: coordinator::now_micros(),
    };
    let fed = coordinator::feed(&mut tx, saga_id, &reply, &coordinator::Cause::default()).await;
    assert!(matches!(fed, Err(HandlerError::Unavailable(_))), "{fed:?}");
    drop(tx);
    let entries: i64 = sqlx::query_scalar("select count(*) from events where stream_id = $1")
        .bind(sagas::wire::stream_id(saga_id))
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(entries, 2, "nothing written");

    // Its reservation's timer comes due, and so does another saga's.
    let (other, definition, data) = conversion(10_000);
    start(&pool, other, definition, data).await;
    sqlx::query(
        "update saga_timers
            set due_at = now() - case when saga_id = $1 then interval '2 seconds'
                                      else interval '1 second' end",
    )
    .bind(saga_id)
    .execute(&pool)
    .await
    .expect("due, the unknown version's first");
    assert_eq!(
        coordinator::fire_due_timers(&pool, None, 10)
            .await
            .expect("fire"),
        1,
        "the other saga's timer fires"
    );
    let waiting: i64 =
        sqlx::query_scalar("select count(*) from saga_timers where saga_id = $1 and attempt = 1")
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .expect("timers");
    assert_eq!(waiting, 1, "the unknown version's timer waits");

    let (status, detail) = call(&router, "GET", &format!("/sagas/{saga_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "still shown: {detail}");
    assert!(
        detail["unknown_definition"]
            .as_str()
            .is_some_and(|why| why.contains("v9")),
        "{detail}"
    );
    assert_eq!(detail["timeline"].as_array().map(Vec::len), Some(2));
}

fn rejected(code: &str, reason: &str) -> Answer {
    Answer::Rejected {
        code: code.into(),
        reason: reason.into(),
    }
}

/// Failing the tracking event is refused every time: the saga parks.
async fn refuse_until_parked(pool: &PgPool, saga_id: Uuid) {
    for _ in 0..sagas::definition::COMPENSATION_ATTEMPTS {
        let too_late = rejected("tracking_event_already_confirmed", "too late");
        answer(pool, saga_id, too_late).await;
    }
}

#[sqlx::test(migrations = false)]
async fn operators_inspect_and_act_through_the_api(db: PgPool) {
    let pool = database(db).await;
    let router = sagas::api::router(pool.clone());
    let (saga_id, definition, data) = conversion(10_000);
    start(&pool, saga_id, definition, data).await;
    answer(&pool, saga_id, rejected("budget_exhausted", "no budget")).await;
    // Failing the tracking event is refused every time: the saga parks.
    refuse_until_parked(&pool, saga_id).await;
    let (_, parked) = call(&router, "GET", "/sagas?status=parked", None).await;
    assert_eq!(parked["sagas"][0]["saga_id"], saga_id.to_string());
    let (_, none) = call(
        &router,
        "GET",
        "/sagas?status=parked&stalled_for=3600",
        None,
    )
    .await;
    assert_eq!(
        none["sagas"],
        serde_json::json!([]),
        "not stalled for an hour yet"
    );

    // A body does not name the actor: without the BFF's header there is none.
    let (status, _) = call(
        &router,
        "POST",
        &format!("/sagas/{saga_id}/resume"),
        Some(serde_json::json!({ "actor": "mallory" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A reason is at most 2000 characters; a longer one is refused, and nothing is done.
    let (status, problem) = send(
        &router,
        "POST",
        &format!("/sagas/{saga_id}/resume"),
        Some(serde_json::json!({ "reason": "x".repeat(2001) })),
        Some("alice"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("2000")),
        "{problem}"
    );
    let (_, detail) = call(&router, "GET", &format!("/sagas/{saga_id}"), None).await;
    assert_eq!(detail["saga"]["status"], "parked", "{detail}");
    // Resume: the budget was raised, so the refused reservation goes again, and the saga forward.
    let (status, _) = act(&router, &format!("/sagas/{saga_id}/resume"), Some("alice")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, detail) = call(&router, "GET", &format!("/sagas/{saga_id}"), None).await;
    assert_eq!(detail["saga"]["status"], "running");
    assert_eq!(detail["saga"]["current_step"], "reserve-budget");
    let (status, _) = act(&router, &format!("/sagas/{saga_id}/retry"), Some("alice")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "nothing to retry while running"
    );
    // It is refused again, and so is every compensation: parked once more, the operator forces
    // it to compensate, skipping the compensation that keeps failing.
    answer(
        &pool,
        saga_id,
        rejected("budget_exhausted", "still no budget"),
    )
    .await;
    refuse_until_parked(&pool, saga_id).await;
    let (status, _) = send(
        &router,
        "POST",
        &format!("/sagas/{saga_id}/compensate"),
        Some(serde_json::json!({ "reason": "  the partner was paid by hand  " })),
        Some("bob"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = act(&router, &format!("/sagas/{saga_id}/retry"), Some("alice")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "nothing to retry once it is compensated"
    );
    let (status, _) = act(
        &router,
        &format!("/sagas/{}/retry", Uuid::new_v4()),
        Some("x"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = act(&router, &format!("/sagas/{saga_id}/dance"), Some("x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, detail) = call(&router, "GET", &format!("/sagas/{saga_id}"), None).await;
    assert_eq!(detail["saga"]["status"], "compensated");
    assert_eq!(
        detail["steps"][0],
        serde_json::json!({ "step": "reserve-budget", "status": "failed", "attempts": 1 })
    );
    let timeline = detail["timeline"].as_array().expect("timeline");
    assert!(
        timeline
            .iter()
            .any(|e| e["entry"] == "operator_acted" && e["actor"] == "alice")
            && timeline.iter().any(|e| e["entry"] == "operator_acted"
                && e["actor"] == "bob"
                && e["reason"] == "the partner was paid by hand"),
        "{timeline:?}"
    );
    let (_, log) = call(
        &router,
        "GET",
        &format!("/sagas/{saga_id}/compensations"),
        None,
    )
    .await;
    let kinds: Vec<&str> = log["compensations"]
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|e| e["entry"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"compensation_started"));
    assert_eq!(kinds.last(), Some(&"compensated"));
    assert!(kinds.contains(&"parked"), "{kinds:?}");
    let failures = log["compensations"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|e| e["entry"] == "compensation_failed")
        .count();
    assert_eq!(
        failures as u32,
        2 * sagas::definition::COMPENSATION_ATTEMPTS,
        "parked twice, before and after the resume"
    );
    let retries = kinds
        .iter()
        .filter(|k| **k == "compensation_retry_due")
        .count();
    assert_eq!(
        retries as u32,
        2 * (sagas::definition::COMPENSATION_ATTEMPTS - 1),
        "each refusal but the last waited for its backoff"
    );
}

#[sqlx::test(migrations = false)]
async fn sagas_are_found_by_business_key_a_page_at_a_time_with_counts(db: PgPool) {
    let pool = database(db).await;
    let router = sagas::api::router(pool.clone());
    let mut started = Vec::new();
    for order in ["order-1", "order-2", "order-3"] {
        let (_, definition, mut data) = conversion(10_000);
        if let Some(o) = data.order.as_mut() {
            o.order_id = order.into();
        }
        let saga_id = sagas::wire::saga_id_for(data.tracking_id);
        let tracking_id = data.tracking_id;
        start(&pool, saga_id, definition, data).await;
        started.push((saga_id, tracking_id));
    }
    let (status, first) = call(&router, "GET", "/sagas?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["sagas"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["counts"], serde_json::json!({ "running": 3 }));
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = call(
        &router,
        "GET",
        &format!("/sagas?limit=2&cursor={next}"),
        None,
    )
    .await;
    assert_eq!(second["sagas"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["next"], Value::Null, "the last page");
    let mut seen: Vec<String> = first["sagas"]
        .as_array()
        .into_iter()
        .chain(second["sagas"].as_array())
        .flatten()
        .map(|saga| saga["saga_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    seen.sort();
    let mut all: Vec<String> = started.iter().map(|(id, _)| id.to_string()).collect();
    all.sort();
    assert_eq!(seen, all, "every saga once across the pages");

    for key in [
        "order-2".to_owned(),
        started[1].0.to_string(),
        started[1].1.to_string(),
    ] {
        let (_, found) = call(&router, "GET", &format!("/sagas?key={key}"), None).await;
        assert_eq!(found["sagas"].as_array().map(Vec::len), Some(1), "{key}");
        assert_eq!(found["sagas"][0]["saga_id"], started[1].0.to_string());
        assert_eq!(found["sagas"][0]["order_id"], "order-2");
    }
    let (_, none) = call(&router, "GET", "/sagas?key=order-9&status=running", None).await;
    assert_eq!(none["sagas"], serde_json::json!([]));
    assert_eq!(none["counts"], serde_json::json!({}));
    let (status, _) = call(&router, "GET", "/sagas?cursor=yesterday", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
