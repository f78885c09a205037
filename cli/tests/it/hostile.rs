//! Messages that could never be stored, produced straight to a command topic past the API: text
//! holding U+0000 in the body or in a property. The service dead-letters each with the reason and
//! goes on serving; its query API lists them, and one re-driven comes back as a new dead letter. (Before, campaigns and tracking stored them, their projections then failed on
//! them and the process exited, again after every restart.)

use super::{Database, SERVICE_TOKEN, free_address, serve, wait_for};
use messaging::testing::{self, DeadLetter};
use messaging::{Client, effects};
use schemas::Message;
use schemas::commands::{RecordTrackingEvent, RegisterPartner};
use schemas::values::{Money, Order, TrackingKind};
use std::collections::BTreeSet;
use uuid::Uuid;

async fn publish<M: Message>(client: &Client, key: Uuid, command: &M, actor: Option<&str>) {
    let properties = effects::first_of_flow(Uuid::new_v4(), command, None, actor.map(Into::into));
    let message = effects::outgoing(command, &key.to_string(), &properties).expect("encode");
    client.publish(&message).await.expect("publish");
}

/// Each letter's cause and the start of its error, in a set (letters of different keys come in
/// any order).
fn reasons(letters: &[DeadLetter]) -> BTreeSet<(String, String)> {
    letters
        .iter()
        .map(|letter| {
            let error = &letter.properties["error"];
            let start = error.split(" holds").next().expect("a reason").to_owned();
            assert!(error.contains("U+0000 (NUL)"), "{error}");
            (letter.properties["error_kind"].clone(), start)
        })
        .collect()
}

fn expected() -> BTreeSet<(String, String)> {
    [
        ("undecodable".to_owned(), "a text field".to_owned()),
        ("undecodable".to_owned(), "property actor".to_owned()),
    ]
    .into()
}

/// GETs `url` of a service's query API; its status.
async fn status(url: &str) -> reqwest::StatusCode {
    let http = messaging::testing::service_client(&SERVICE_TOKEN);
    http.get(url).send().await.expect("request").status()
}

/// Serves `service` and produces three commands made by `command` straight to their topic: one
/// whose text holds U+0000, one whose actor property does, and a fine one. The fine one is
/// applied (it shows under `route` by its id), the other two are dead-lettered with the reason
/// and never stored, and the process goes on running.
async fn dead_letters_nul_and_goes_on<M: Message>(
    service: &str,
    route: &str,
    command: impl Fn(&str) -> (Uuid, M),
) {
    let pulsar = testing::settings().await;
    let database = Database::create().await;
    let listen = free_address();
    let mut process = serve(service, &[], &database, &pulsar, listen);
    let base = format!("http://{listen}");
    wait_for(&format!("{base}/events"), |_| true).await;
    let client = Client::connect(pulsar.clone()).await.expect("client");

    let (in_body, in_property, fine) = (command("Evil\0Corp"), command("Eve"), command("Pat"));
    publish(&client, in_body.0, &in_body.1, None).await;
    publish(&client, in_property.0, &in_property.1, Some("eve\0")).await;
    publish(&client, fine.0, &fine.1, None).await;

    wait_for(&format!("{base}/{route}/{}", fine.0), |_| true).await;
    let letters = testing::dead_letters(&pulsar, M::TOPIC, None, 2).await;
    assert_eq!(reasons(&letters), expected());
    for hostile in [in_body.0, in_property.0] {
        let url = format!("{base}/{route}/{hostile}");
        assert_eq!(status(&url).await, reqwest::StatusCode::NOT_FOUND);
    }
    assert!(
        process.try_wait().expect("status").is_none(),
        "{service} is still running"
    );
    redriven_garbage_comes_back::<M>(&base, &pulsar).await;

    process.start_kill().expect("stop");
    process.wait().await.expect("reap");
    database.drop().await;
}

/// The service's query API lists its two dead letters, undecodable, with the reason; the one
/// whose body holds U+0000, re-driven, is handled again and dead-lettered again as a new one.
async fn redriven_garbage_comes_back<M: Message>(base: &str, pulsar: &messaging::PulsarSettings) {
    let http = messaging::testing::service_client(&SERVICE_TOKEN);
    let list = || async {
        let page: serde_json::Value = http
            .get(format!("{base}/dead-letters"))
            .send()
            .await
            .expect("dead letters")
            .json()
            .await
            .expect("json");
        page
    };
    let page = list().await;
    let letters = page["dead_letters"].as_array().expect("a list");
    assert_eq!(letters.len(), 2, "{page}");
    assert!(letters.iter().all(|l| l["cause"] == "undecodable"
        && l["topic"] == M::TOPIC.name
        && l["status"] == "pending"));
    assert_eq!(page["topics"][0]["pending"], 2, "{page}");
    let id = letters
        .iter()
        .find(|l| {
            l["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("a text field"))
        })
        .and_then(|l| l["id"].as_str())
        .expect("the dead letter whose body holds U+0000");
    let shown: serde_json::Value = http
        .get(format!("{base}/dead-letters/{id}"))
        .send()
        .await
        .expect("a dead letter")
        .json()
        .await
        .expect("json");
    assert!(shown["body"].is_null(), "undecodable: no body, {shown}");
    assert!(shown["error"].as_str().expect("error").contains("U+0000"));

    let redrive = |actor: &'static str| {
        http.post(format!("{base}/dead-letters/{id}/redrive"))
            .header("x-pulsaga-actor", actor)
            .json(&serde_json::json!({ "reason": "try it once more" }))
            .send()
    };
    let redriven = redrive("ops").await.expect("re-drive");
    assert_eq!(redriven.status(), reqwest::StatusCode::OK);
    let again = redrive("ops").await.expect("re-drive again");
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);
    let letters = testing::dead_letters(pulsar, M::TOPIC, None, 3).await;
    assert_eq!(letters[2].properties["redriven_from"], id);
    let page = list().await;
    assert_eq!(
        page["dead_letters"].as_array().map(Vec::len),
        Some(3),
        "{page}"
    );
    assert_eq!(
        (
            &page["topics"][0]["pending"],
            &page["topics"][0]["redriven"]
        ),
        (&serde_json::json!(2), &serde_json::json!(1)),
        "{page}"
    );
}

#[tokio::test]
async fn campaigns_dead_letters_text_holding_nul_and_goes_on() {
    dead_letters_nul_and_goes_on("campaigns", "partners", |name| {
        let partner_id = Uuid::new_v4();
        let command = RegisterPartner {
            partner_id,
            name: name.into(),
            email: "p@example.com".into(),
            payout_account: "NL00".into(),
        };
        (partner_id, command)
    })
    .await;
}

#[tokio::test]
async fn tracking_dead_letters_text_holding_nul_and_goes_on() {
    dead_letters_nul_and_goes_on("tracking", "tracking-events", |order_id| {
        let tracking_id = Uuid::new_v4();
        let command = RecordTrackingEvent {
            tracking_id,
            campaign_id: Uuid::new_v4(),
            partner_id: Uuid::new_v4(),
            kind: TrackingKind::Conversion,
            order: Some(Order {
                order_id: order_id.into(),
                amount: Money {
                    amount: 1_000,
                    currency: "EUR".into(),
                },
            }),
            occurred_at: 1_772_357_400_000_000,
        };
        (tracking_id, command)
    })
    .await;
}
