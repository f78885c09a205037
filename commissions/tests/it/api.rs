//! The query API's answers to malformed and unknown requests, served on a free port against a
//! fresh database (no broker needed): every error is problem+json, and totals of an id nothing
//! was recorded for are zero rather than missing.

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Serves the query API alone; returns its base URL.
async fn serve(pool: PgPool) -> String {
    messaging::host::migrate(&pool, &commissions::service())
        .await
        .expect("migrate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        axum::serve(listener, commissions::api::router(pool))
            .await
            .expect("serve");
    });
    base
}

async fn get(base: &str, path: &str) -> (reqwest::StatusCode, String, Value) {
    messaging::testing::get_json(&reqwest::Client::new(), &format!("{base}{path}")).await
}

#[sqlx::test(migrations = false)]
async fn malformed_requests_are_problems(pool: PgPool) {
    let base = serve(pool).await;
    let id = Uuid::new_v4();
    let cases = [
        ("/commissions/not-a-uuid".to_owned(), 400),
        (format!("/commissions/{id}?as_of=now"), 400),
        (format!("/commissions/{id}"), 404),
        (format!("/partners/{id}/balance?currency=EUR"), 400),
        (format!("/campaigns/{id}/commissions/summary?x=1"), 400),
        (format!("/partners/{id}/commissions?limit=0"), 400),
        (format!("/partners/{id}/commissions?limit=1001"), 400),
        (format!("/partners/{id}/commissions?status=paid"), 400),
        (format!("/partners/{id}/commissions?after=first"), 400),
        (format!("/partners/{id}/commissions?partner=me"), 400),
        ("/partners/x/commissions".to_owned(), 400),
    ];
    for (path, expected) in cases {
        let (status, content_type, body) = get(&base, &path).await;
        assert_eq!(status.as_u16(), expected, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert_eq!(body["status"], expected, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    let (_, _, unknown) = get(&base, &format!("/commissions/{id}?as_of=now")).await;
    assert!(
        unknown["detail"]
            .as_str()
            .is_some_and(|d| d.contains("as_of")),
        "the problem names the unknown field: {unknown}"
    );
}

#[sqlx::test(migrations = false)]
async fn totals_of_ids_without_commissions_are_zero(pool: PgPool) {
    let base = serve(pool).await;
    let id = Uuid::new_v4();
    let (status, _, balance) = get(&base, &format!("/partners/{id}/balance")).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(
        balance,
        json!({"partner_id": id, "commissions": 0, "reversed_commissions": 0, "currencies": []})
    );
    let (_, _, summary) = get(&base, &format!("/campaigns/{id}/commissions/summary")).await;
    assert_eq!(
        summary,
        json!({"campaign_id": id, "commissions": 0, "reversed_commissions": 0, "currencies": []})
    );
    let (_, _, listing) = get(&base, &format!("/partners/{id}/commissions")).await;
    assert_eq!(
        listing,
        json!({"partner_id": id, "commissions": [], "next": null})
    );
}
