//! The query API's answers to bad input and to what does not exist: problem+json, 400 or 404.

use super::{campaign, start};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = false)]
async fn bad_queries_and_unknown_ids_are_answered_with_problem_json(db: PgPool) {
    let service = start(db).await;
    let create = campaign(Uuid::new_v4(), 1_000, 300);
    let id = create.campaign_id;
    service.command(id, &create).await;
    service
        .wait_for(&format!("/campaigns/{id}"), |b| b["version"] == 1)
        .await;

    let unknown = Uuid::new_v4();
    let cases = [
        // Unknown query fields are refused, not ignored.
        (format!("/campaigns?advertizer_id={unknown}"), 400),
        (format!("/campaigns/{id}?asof=2026-01-01T00:00:00Z"), 400),
        (format!("/campaigns/{id}/reservations?status=held"), 400),
        (format!("/partners/{unknown}?verbose=1"), 400),
        // Malformed ids and times.
        ("/campaigns?advertiser_id=42".to_owned(), 400),
        ("/campaigns/not-a-uuid".to_owned(), 400),
        ("/campaigns/not-a-uuid/reservations".to_owned(), 400),
        ("/partners/not-a-uuid".to_owned(), 400),
        (format!("/campaigns/{id}?as_of=yesterday"), 400),
        // Nothing there.
        (format!("/campaigns/{unknown}"), 404),
        (format!("/campaigns/{unknown}/reservations"), 404),
        (format!("/partners/{unknown}"), 404),
    ];
    for (path, expected) in cases {
        let (status, content_type, body) = service.get_with_type(&path).await;
        assert_eq!(
            (status.as_u16(), content_type.as_str()),
            (expected, "application/problem+json"),
            "{path}: {body}"
        );
        assert_eq!(body["status"], expected, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }

    // The same routes with good input answer.
    for path in [
        format!("/campaigns?advertiser_id={}", create.advertiser_id),
        format!("/campaigns/{id}/reservations"),
        format!("/streams/campaign-{id}"),
    ] {
        let (status, body) = service.get(&path).await;
        assert!(status.is_success(), "{path}: {status} {body}");
    }
    service.stop().await;
}
