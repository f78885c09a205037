//! The query routes through a real router (`tower::ServiceExt::oneshot`): events decoded by the
//! service's decoder, pages, time ranges, one flow by correlation id, command outcomes, and
//! problem+json errors.

use super::{event, store};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use eventstore::{ExpectedVersion, Outcome, OutcomeRecord, RecordedEvent, append, record_outcome};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;
use uuid::Uuid;

pub(super) fn decode(event: &RecordedEvent) -> Option<Value> {
    let text = std::str::from_utf8(&event.payload).ok()?;
    Some(json!({ "text": text }))
}

/// The state of a test stream: its payloads' texts, in order.
pub(super) fn fold(events: &[RecordedEvent]) -> Option<Value> {
    eventstore::api::fold_state(
        events,
        |event| String::from_utf8(event.payload.clone()).ok(),
        |texts: &mut Vec<String>, text: &String| texts.push(text.clone()),
    )
}

pub(super) async fn get(router: &axum::Router, uri: &str) -> (StatusCode, String, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[sqlx::test(migrations = false)]
async fn the_query_routes_show_streams_pages_and_outcomes(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    append(
        &mut conn,
        "c-1",
        "campaign",
        ExpectedVersion::NoStream,
        &[event("Created", b"one"), event("Renamed", b"two")],
    )
    .await
    .expect("append");
    append(
        &mut conn,
        "c-2",
        "campaign",
        ExpectedVersion::NoStream,
        &[event("Created", b"three")],
    )
    .await
    .expect("append");
    let router = eventstore::api::routes(pool.clone(), decode, fold);

    let (status, _, body) = get(&router, "/streams/c-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().expect("list").len(), 2);
    assert_eq!(body[1]["data"], json!({ "text": "two" }));
    assert_eq!(body[1]["version"], 2);
    let (_, _, tail) = get(&router, "/streams/c-1?from_version=2").await;
    assert_eq!(tail.as_array().expect("list").len(), 1);

    // Its state, folded by the service's fold: now, and as of a time before it existed.
    let (status, _, state) = get(&router, "/streams/c-1/state").await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(
        (&state["state"], &state["version"]),
        (&json!(["one", "two"]), &json!(2))
    );
    let (status, _, _) = get(&router, "/streams/c-1/state?as_of=2000-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&router, "/streams/c-1/state?as_of=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !super::log_settled(&pool).await {
        assert!(
            std::time::Instant::now() < deadline,
            "a transaction on the server never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (_, _, first) = get(&router, "/events?limit=2").await;
    assert_eq!(first["events"].as_array().expect("events").len(), 2);
    let (_, _, rest) = get(&router, &format!("/events?after={}&limit=2", first["next"])).await;
    assert_eq!(rest["events"][0]["data"], json!({ "text": "three" }));
    let (_, _, window) = get(
        &router,
        "/events?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z",
    )
    .await;
    assert_eq!(window["events"], json!([]));
    let (_, _, all) = get(&router, "/events?from=2000-01-01T00:00:00Z").await;
    assert_eq!(all["events"].as_array().expect("events").len(), 3);

    // One flow across two streams, in the order recorded; another flow's event left out.
    let flow = Uuid::new_v4();
    let in_flow = |event_type: &str, correlation: Uuid| {
        let mut e = event(event_type, b"flow");
        e.metadata.correlation_id = Some(correlation);
        e
    };
    for (stream, event_type, correlation) in [
        ("order-1", "OrderPlaced", flow),
        ("other", "Unrelated", Uuid::new_v4()),
        ("payment-1", "PaymentRequested", flow),
    ] {
        append(
            &mut conn,
            stream,
            "flow",
            ExpectedVersion::Any,
            &[in_flow(event_type, correlation)],
        )
        .await
        .expect("append");
    }
    let (status, _, events) = get(&router, &format!("/correlations/{flow}")).await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = events
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["OrderPlaced", "PaymentRequested"]);

    let command = Uuid::new_v4();
    let (_, _, pending) = get(&router, &format!("/commands/{command}")).await;
    assert_eq!(pending["status"], "pending");
    let rejected = Outcome::Rejected {
        code: "budget_exhausted".into(),
        reason: "no budget".into(),
    };
    record_outcome(
        &mut conn,
        OutcomeRecord {
            command_id: command,
            command_type: "ReserveBudget",
            aggregate_id: "c-1",
            actor: Some("sagas"),
            outcome: &rejected,
        },
    )
    .await
    .expect("record");
    let (_, _, outcome) = get(&router, &format!("/commands/{command}")).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("rejected"), Some("budget_exhausted"))
    );

    for (uri, expected) in [
        ("/streams/none", StatusCode::NOT_FOUND),
        ("/events?from=yesterday", StatusCode::BAD_REQUEST),
        ("/events?limit=0", StatusCode::BAD_REQUEST),
        ("/events?after=999999", StatusCode::BAD_REQUEST),
    ] {
        let (status, content_type, problem) = get(&router, uri).await;
        assert_eq!(status, expected, "{uri}");
        assert_eq!(content_type, "application/problem+json", "{uri}");
        assert_eq!(problem["status"], expected.as_u16(), "{uri}");
    }
    let (status, _, _) = get(&router, "/events?colour=red").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown query fields are refused"
    );
}

/// When every connection of the pool is taken for longer than a request may wait, the query API
/// answers 503 with `Retry-After`, not an internal error.
#[sqlx::test(migrations = false)]
async fn a_starved_pool_is_answered_503_with_retry_after(db: PgPool) {
    let connect = (*db.connect_options()).clone();
    let migrated = store(db, 1).await;
    migrated.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_with(connect)
        .await
        .expect("pool");
    let router = eventstore::api::routes(pool.clone(), decode, fold);
    let held = pool.acquire().await.expect("the only connection");

    let response = router
        .clone()
        .oneshot(
            Request::get("/streams/c-1")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");

    drop(held);
    let (status, _, _) = get(&router, "/streams/c-1").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the database's answer: no such stream"
    );
}
