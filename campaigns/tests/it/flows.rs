//! The campaigns commands end to end over the broker: registering partners, creating campaigns,
//! associating partners and content, reserving and releasing budget; duplicates, rejections,
//! time travel, and a projection rebuild checked against live.

use super::{association, campaign, registration, reservation, start};
use schemas::commands::{AssociateContent, ReleaseBudget};
use schemas::values::ContentKind;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

fn banner(campaign_id: Uuid) -> AssociateContent {
    AssociateContent {
        campaign_id,
        content_id: Uuid::new_v4(),
        kind: ContentKind::Banner,
        url: "https://example.com/spring.png".into(),
        title: "Spring banner".into(),
        tags: vec!["spring".into(), "sale".into()],
    }
}

fn release(campaign_id: Uuid, reservation_id: Uuid) -> ReleaseBudget {
    ReleaseBudget {
        reservation_id,
        campaign_id,
        reason: "commission rejected".into(),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).expect("format")
}

#[sqlx::test(migrations = false)]
async fn a_campaign_is_set_up_and_its_budget_reserved_and_released(db: PgPool) {
    let service = start(db).await;
    let partner = registration();
    let registered = service.send(partner.partner_id, &partner).await;
    assert_eq!(service.outcome(registered).await["status"], "succeeded");
    let advertiser = Uuid::new_v4();
    let create = campaign(advertiser, 1_000, 300);
    let id = create.campaign_id;
    let created = service.send(id, &create).await;
    assert_eq!(service.outcome(created).await["status"], "succeeded");
    let associate = association(id, partner.partner_id);
    let associated = service.send(id, &associate).await;
    assert_eq!(service.outcome(associated).await["status"], "succeeded");
    let content = banner(id);
    let attached = service.send(id, &content).await;
    assert_eq!(service.outcome(attached).await["status"], "succeeded");

    // A saga keys its commands by saga id, not by campaign.
    let reserve = reservation(id, partner.partner_id);
    let reserved = service.send(Uuid::new_v4(), &reserve).await;
    assert_eq!(service.outcome(reserved).await["status"], "succeeded");
    let path = format!("/campaigns/{id}");
    let view = service.wait_for(&path, |b| b["reserved"] == 300).await;
    assert_eq!(
        view,
        json!({
            "campaign_id": id,
            "advertiser_id": advertiser,
            "name": "Spring sale",
            "budget": 1_000,
            "currency": "EUR",
            "commission_rule": { "type": "fixed", "amount": 300 },
            "valid_from": view["valid_from"],
            "valid_until": view["valid_until"],
            "reserved": 300,
            "available": 700,
            "version": 4,
            "created_at": view["created_at"],
            "updated_at": view["updated_at"],
            "partners": [partner.partner_id],
            "content": [{
                "content_id": content.content_id,
                "kind": "banner",
                "url": "https://example.com/spring.png",
                "title": "Spring banner",
                "tags": ["spring", "sale"],
            }],
        })
    );
    let valid_from = OffsetDateTime::parse(view["valid_from"].as_str().unwrap_or(""), &Rfc3339)
        .expect("valid_from is RFC 3339");
    assert_eq!(
        (valid_from.unix_timestamp_nanos() / 1000) as i64,
        create.valid_from
    );
    let (_, held) = service.get(&format!("{path}/reservations")).await;
    assert_eq!(
        (held[0]["status"].as_str(), held[0]["amount"].as_i64()),
        (Some("held"), Some(300)),
        "{held}"
    );
    assert_eq!(held[0]["tracking_id"], json!(reserve.tracking_id));

    let released = service
        .send(Uuid::new_v4(), &release(id, reserve.reservation_id))
        .await;
    assert_eq!(service.outcome(released).await["status"], "succeeded");
    let view = service
        .wait_for(&path, |b| b["reserved"] == 0 && b["version"] == 5)
        .await;
    assert_eq!(view["available"], 1_000);
    let (_, reservations) = service.get(&format!("{path}/reservations")).await;
    assert_eq!(
        (
            reservations[0]["status"].as_str(),
            reservations[0]["release_reason"].as_str()
        ),
        (Some("released"), Some("commission rejected")),
        "{reservations}"
    );
    assert!(reservations[0]["released_at"].is_string());

    let (_, mine) = service
        .get(&format!("/campaigns?advertiser_id={advertiser}"))
        .await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine[0]["campaign_id"], json!(id));
    assert!(
        mine[0].get("partners").is_none(),
        "the list leaves the details out"
    );
    let (_, theirs) = service
        .get(&format!("/campaigns?advertiser_id={}", Uuid::new_v4()))
        .await;
    assert_eq!(theirs, json!([]));
    let (_, all) = service.get("/campaigns").await;
    assert_eq!(all.as_array().map(Vec::len), Some(1));

    let partner_view = service
        .wait_for(&format!("/partners/{}", partner.partner_id), |b| {
            b["campaigns"] == json!([id])
        })
        .await;
    assert_eq!(
        (
            partner_view["name"].as_str(),
            partner_view["email"].as_str(),
            partner_view["payout_account"].as_str()
        ),
        (
            Some("Ada's Deals"),
            Some("ada@example.com"),
            Some("DE89370400440532013000")
        )
    );

    // Every event went to the outbox, caused by its command, keyed by its aggregate.
    let expected = [
        ("PartnerRegistered", registered),
        ("CampaignCreated", created),
        ("PartnerAssociated", associated),
        ("ContentAssociated", attached),
        ("BudgetReserved", reserved),
        ("BudgetReleased", released),
    ];
    service
        .assert_published("campaigns-events", &expected)
        .await;
    let keys: Vec<String> =
        sqlx::query_scalar("select key from outbox where topic = 'campaigns-events' order by id")
            .fetch_all(&service.pool)
            .await
            .expect("keys");
    assert_eq!(keys[0], partner.partner_id.to_string());
    assert!(
        keys[1..].iter().all(|key| *key == id.to_string()),
        "{keys:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut conn = service.pool.acquire().await.expect("connection");
    while eventstore::outbox::pending(&mut conn)
        .await
        .expect("pending")
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never published"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(conn);
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_same_command_twice_has_one_effect(db: PgPool) {
    let service = start(db).await;
    let create = campaign(Uuid::new_v4(), 1_000, 300);
    let id = create.campaign_id;
    let command_id = Uuid::new_v4();
    service.send_as(command_id, id, &create).await;
    service.send_as(command_id, id, &create).await;
    // A new command with the same data is a retry by a client: accepted, nothing changes.
    let retry = service.command(id, &create).await;
    assert_eq!(
        (retry["status"].as_str(), retry["code"].as_str()),
        (Some("succeeded"), Some("already_applied"))
    );
    assert_eq!(service.outcome(command_id).await["status"], "succeeded");

    let partner = registration();
    service.command(partner.partner_id, &partner).await;
    service
        .command(id, &association(id, partner.partner_id))
        .await;
    // A saga retrying its reservation after a timeout sends the same reservation again.
    let reserve = reservation(id, partner.partner_id);
    assert_eq!(
        service.command(Uuid::new_v4(), &reserve).await["status"],
        "succeeded"
    );
    let again = service.command(Uuid::new_v4(), &reserve).await;
    assert_eq!(again["code"], "already_applied");

    let types = service.history(&format!("campaign-{id}")).await;
    assert_eq!(
        types,
        ["CampaignCreated", "PartnerAssociated", "BudgetReserved"]
    );
    let view = service
        .wait_for(&format!("/campaigns/{id}"), |b| b["version"] == 3)
        .await;
    assert_eq!(view["reserved"], 300, "reserved once");
    let skipped: i64 = sqlx::query_scalar("select count(*) from inbox")
        .fetch_one(&service.pool)
        .await
        .expect("inbox");
    assert_eq!(
        skipped, 6,
        "six distinct commands; the duplicate delivery was skipped by the inbox"
    );
    let replies = service
        .published("campaigns-events")
        .await
        .into_iter()
        .filter(|(t, _)| t == "CommandAlreadyApplied")
        .count();
    assert_eq!(replies, 2);
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn rule_breaking_commands_are_rejected_with_their_reason(db: PgPool) {
    let service = start(db).await;
    let partner = registration();
    service.command(partner.partner_id, &partner).await;
    let create = campaign(Uuid::new_v4(), 600, 300);
    let id = create.campaign_id;
    service.command(id, &create).await;

    let early = reservation(id, partner.partner_id);
    let outcome = service.command(Uuid::new_v4(), &early).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("rejected"), Some("partner_not_associated"))
    );
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&partner.partner_id.to_string())),
        "{outcome}"
    );

    service
        .command(id, &association(id, partner.partner_id))
        .await;
    for _ in 0..2 {
        let reserve = reservation(id, partner.partner_id);
        assert_eq!(
            service.command(Uuid::new_v4(), &reserve).await["status"],
            "succeeded"
        );
    }
    let one_too_many = reservation(id, partner.partner_id);
    let outcome = service.command(Uuid::new_v4(), &one_too_many).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("rejected"), Some("budget_exhausted"))
    );
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains("has 0 left") && r.contains("needs 300")),
        "{outcome}"
    );

    let mut outside = reservation(id, partner.partner_id);
    outside.occurred_at = create.valid_until;
    let outcome = service.command(Uuid::new_v4(), &outside).await;
    assert_eq!(outcome["code"], "campaign_not_active");

    let nowhere = reservation(Uuid::new_v4(), partner.partner_id);
    let outcome = service.command(Uuid::new_v4(), &nowhere).await;
    assert_eq!(outcome["code"], "campaign_not_found");

    let mut other_data = partner.clone();
    other_data.email = "someone.else@example.com".into();
    let outcome = service.command(partner.partner_id, &other_data).await;
    assert_eq!(outcome["code"], "partner_already_registered");

    let invalid = campaign(Uuid::new_v4(), 0, 300);
    let outcome = service.command(invalid.campaign_id, &invalid).await;
    assert_eq!(outcome["code"], "invalid_budget");
    let (status, _) = service
        .get(&format!("/campaigns/{}", invalid.campaign_id))
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "a rejected command changes nothing"
    );

    let view = service
        .wait_for(&format!("/campaigns/{id}"), |b| b["version"] == 4)
        .await;
    assert_eq!(
        (view["reserved"].as_i64(), view["available"].as_i64()),
        (Some(600), Some(0))
    );
    let rejections = service
        .published("campaigns-events")
        .await
        .into_iter()
        .filter(|(t, _)| t == "CommandRejected")
        .count();
    assert_eq!(
        rejections, 6,
        "each rejection is published for whoever waits on the command"
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn as_of_shows_the_campaign_as_it_stood_then(db: PgPool) {
    let service = start(db).await;
    let before_creation = rfc3339(OffsetDateTime::now_utc());
    let partner = registration();
    service.command(partner.partner_id, &partner).await;
    let create = campaign(Uuid::new_v4(), 1_000, 300);
    let id = create.campaign_id;
    service.command(id, &create).await;
    service
        .command(id, &association(id, partner.partner_id))
        .await;
    let before_reservation = rfc3339(OffsetDateTime::now_utc());
    let reserve = reservation(id, partner.partner_id);
    service.command(Uuid::new_v4(), &reserve).await;
    let before_release = rfc3339(OffsetDateTime::now_utc());
    service
        .command(Uuid::new_v4(), &release(id, reserve.reservation_id))
        .await;

    let path = format!("/campaigns/{id}");
    let (_, then) = service
        .get(&format!("{path}?as_of={before_reservation}"))
        .await;
    assert_eq!(
        (
            then["reserved"].as_i64(),
            then["version"].as_i64(),
            then["as_of"].as_str()
        ),
        (Some(0), Some(2), Some(before_reservation.as_str())),
        "{then}"
    );
    assert_eq!(then["partners"], json!([partner.partner_id]));
    let (_, held) = service.get(&format!("{path}?as_of={before_release}")).await;
    assert_eq!(
        (held["reserved"].as_i64(), held["available"].as_i64()),
        (Some(300), Some(700))
    );
    let (status, content_type, body) = service
        .get_with_type(&format!("{path}?as_of={before_creation}"))
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (reqwest::StatusCode::NOT_FOUND, "application/problem+json"),
        "{body}"
    );

    // As of now, the stream's fold is exactly what the live read model shows.
    let live = service.wait_for(&path, |b| b["version"] == 4).await;
    let now = rfc3339(OffsetDateTime::now_utc());
    let (_, mut folded) = service.get(&format!("{path}?as_of={now}")).await;
    assert_eq!(folded["as_of"], json!(now));
    if let Value::Object(map) = &mut folded {
        map.remove("as_of");
    }
    assert_eq!(folded, live);

    // Without an offset the time is ambiguous.
    let (status, content_type, _) = service
        .get_with_type(&format!("{path}?as_of=2026-01-01T00:00:00"))
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (reqwest::StatusCode::BAD_REQUEST, "application/problem+json")
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_read_models_rebuild_to_the_live_state(db: PgPool) {
    let service = start(db).await;
    let partners = [registration(), registration()];
    for partner in &partners {
        service.command(partner.partner_id, partner).await;
    }
    let create = campaign(Uuid::new_v4(), 10_000, 250);
    let id = create.campaign_id;
    service.command(id, &create).await;
    for partner in &partners {
        service
            .command(id, &association(id, partner.partner_id))
            .await;
    }
    service.command(id, &banner(id)).await;
    let mut reservations = Vec::new();
    for n in 0..4 {
        let reserve = reservation(id, partners[n % 2].partner_id);
        service.command(Uuid::new_v4(), &reserve).await;
        reservations.push(reserve.reservation_id);
    }
    service
        .command(Uuid::new_v4(), &release(id, reservations[1]))
        .await;
    service
        .wait_for(&format!("/campaigns/{id}"), |b| b["version"] == 9)
        .await;

    let views = campaigns::projections::CampaignViews;
    let drift = "update campaigns set reserved = 9999";
    let events = service.assert_rebuild_repairs(&views, drift, "9999").await;
    assert_eq!(events, 11);
    let (_, view) = service.get(&format!("/campaigns/{id}")).await;
    assert_eq!(
        (view["reserved"].as_i64(), view["available"].as_i64()),
        (Some(750), Some(9_250)),
        "the rebuild repaired it"
    );
    service.stop().await;
}
