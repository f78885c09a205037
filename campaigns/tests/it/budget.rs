//! The budget under truly concurrent reservations. Through the broker, one campaign's commands
//! from different sagas may reach different consumers (they are keyed by saga id); here the
//! handler runs from many tasks at once, each in its own transaction exactly as the consumer
//! runner runs it, so the only thing standing between them and an overspent budget is the
//! campaign stream's expected version.

use super::{association, campaign, database, reservation};
use campaigns::domain::{Campaign, CampaignCommand};
use campaigns::handlers::{BudgetRelease, BudgetReservation, Creation, PartnerAssociation};
use campaigns::state::SNAPSHOT_EVERY;
use campaigns::wire::{self, Stored};
use eventstore::Aggregate;
use eventstore::{ExpectedVersion, Outcome};
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, StreamEvents};
use schemas::commands::{ReleaseBudget, ReserveBudget};
use schemas::events::CampaignsEvent;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

const COMMISSION: i64 = 300;

fn incoming<M: schemas::Message>(message: M) -> Incoming<M> {
    let properties = effects::first_of_flow(Uuid::new_v4(), &message, None, None);
    Incoming {
        key: Uuid::new_v4().to_string(),
        message,
        properties,
    }
}

/// Handles a message as the consumer runner does: begin, record it in the inbox, handle, commit;
/// a conflict is decided again at once on fresh state. Returns how many attempts lost a race
/// for the campaign's next version.
async fn handle_like_the_runner<H: Handler>(
    pool: &PgPool,
    handler: &H,
    message: &Incoming<H::Message>,
) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conflicts = 0;
    loop {
        let mut tx = pool.begin().await.expect("begin");
        let first = eventstore::record_message(&mut tx, "campaigns", message.properties.message_id)
            .await
            .expect("inbox");
        assert!(first, "each message is handled once");
        match handler.handle(&mut tx, message).await {
            Ok(()) => {
                tx.commit().await.expect("commit");
                return conflicts;
            }
            Err(HandlerError::Conflict(reason)) => {
                // Dropping the transaction rolls it back, inbox record included.
                drop(tx);
                conflicts += 1;
                assert!(
                    Instant::now() < deadline,
                    "still failing after a minute: {reason}"
                );
            }
            Err(permanent) => panic!("a reservation failed permanently: {permanent}"),
        }
    }
}

/// A running campaign with room for exactly `room` reservations, and its associated partner.
async fn running_campaign(pool: &PgPool, room: i64) -> (Uuid, Uuid) {
    let create = campaign(Uuid::new_v4(), room * COMMISSION, COMMISSION);
    let id = create.campaign_id;
    let partner = Uuid::new_v4();
    handle_like_the_runner(pool, &Creation::default(), &incoming(create)).await;
    handle_like_the_runner(
        pool,
        &PartnerAssociation::default(),
        &incoming(association(id, partner)),
    )
    .await;
    (id, partner)
}

/// The amount held after each event of the campaign's stream, in order.
async fn held_after_each_event(pool: &PgPool, id: Uuid) -> Vec<i64> {
    let mut conn = pool.acquire().await.expect("connection");
    let events = eventstore::read_stream(&mut conn, &wire::campaign_stream(id), 1, None)
        .await
        .expect("stream");
    let mut campaign = Campaign::default();
    let mut held = Vec::new();
    for event in &events {
        if let Ok(Some(Stored::Campaign(change))) = wire::stored(event) {
            campaign.apply(&change);
        }
        held.push(campaign.spent());
    }
    held
}

const ATTEMPTS: usize = 50;
const ROOM: i64 = 12;

/// Fifty reservations at once on a fresh campaign with room for twelve: exactly twelve succeed
/// and the budget is never overspent. The campaign, and how many attempts lost a race.
async fn fifty_at_once(pool: &PgPool) -> (Uuid, u32) {
    let (id, partner) = running_campaign(pool, ROOM).await;

    let reservations: Vec<Arc<Incoming<ReserveBudget>>> = (0..ATTEMPTS)
        .map(|_| Arc::new(incoming(reservation(id, partner))))
        .collect();
    let start = Arc::new(Barrier::new(ATTEMPTS));
    // One handler, as in the service: its kept campaign goes from one reservation to the next.
    let handler = Arc::new(BudgetReservation::default());
    let mut tasks = JoinSet::new();
    for message in &reservations {
        let (pool, start, message) = (pool.clone(), start.clone(), message.clone());
        let handler = handler.clone();
        tasks.spawn(async move {
            start.wait().await;
            handle_like_the_runner(&pool, handler.as_ref(), &message).await
        });
    }
    let mut conflicts = 0;
    while let Some(done) = tasks.join_next().await {
        conflicts += done.expect("reservation task");
    }

    let mut conn = pool.acquire().await.expect("connection");
    let (mut succeeded, mut exhausted) = (0, 0);
    for message in &reservations {
        let outcome = eventstore::load_outcome(&mut conn, message.properties.message_id)
            .await
            .expect("outcome")
            .expect("every reservation has an outcome");
        match outcome.outcome {
            Outcome::Succeeded => succeeded += 1,
            Outcome::Rejected { code, .. } if code == "budget_exhausted" => exhausted += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    drop(conn);
    assert_eq!(
        (succeeded, exhausted),
        (ROOM, ATTEMPTS as i64 - ROOM),
        "exactly the budget's room succeeded"
    );
    let budget = ROOM * COMMISSION;
    let held = held_after_each_event(pool, id).await;
    assert!(held.iter().all(|h| *h <= budget), "{held:?}");
    assert_eq!(held.last(), Some(&budget));
    (id, conflicts)
}

#[sqlx::test(migrations = false)]
async fn fifty_concurrent_reservations_never_overspend_the_budget(db: PgPool) {
    let pool = database(db, 16).await;
    // Whether an attempt loses a race is up to the scheduler: rounds on fresh campaigns, each
    // checked, until one did (else the test would not have exercised concurrency).
    let mut rounds = 0;
    let (id, conflicts) = loop {
        rounds += 1;
        let (id, conflicts) = fifty_at_once(&pool).await;
        if conflicts > 0 || rounds == 5 {
            break (id, conflicts);
        }
    };
    assert!(
        conflicts > 0,
        "no attempt lost a race in {rounds} rounds: the test did not exercise concurrency"
    );
    let budget = ROOM * COMMISSION;
    let held = held_after_each_event(&pool, id).await;

    // The read model agrees, once the global log hands it the last reservation: the log waits for
    // the cluster's oldest running transaction, so catching up once is not enough.
    let views = campaigns::projections::CampaignViews;
    let deadline = Instant::now() + Duration::from_secs(30);
    let last_version = held.len() as i64;
    loop {
        eventstore::projection::apply_batch(&pool, &views)
            .await
            .expect("projection");
        let version: Option<i64> =
            sqlx::query_scalar("select version from campaigns where campaign_id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .expect("read model");
        if version == Some(last_version) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projection stayed at {version:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (reserved, available, held_rows): (i64, i64, i64) = sqlx::query_as(
        "select reserved, available,
                (select count(*) from budget_reservations r
                  where r.campaign_id = c.campaign_id and r.status = 'held')
           from campaigns c where campaign_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("read model");
    assert_eq!((reserved, available, held_rows), (budget, 0, ROOM));
    println!("{ATTEMPTS} concurrent reservations: {conflicts} lost a race and were retried");
}

/// Negative control: the same concurrent deciders, appending without the expected version,
/// overspend. Every task reads the campaign before any of them appends (the barrier makes the
/// race certain), so each decides there is room.
#[sqlx::test(migrations = false)]
async fn without_the_expected_version_concurrent_reservations_overspend(db: PgPool) {
    const ATTEMPTS: usize = 8;
    const ROOM: i64 = 3;
    let pool = database(db, ATTEMPTS as u32 + 2).await;
    let (id, partner) = running_campaign(&pool, ROOM).await;
    let decided = Arc::new(Barrier::new(ATTEMPTS));
    let mut tasks = JoinSet::new();
    for _ in 0..ATTEMPTS {
        let (pool, decided) = (pool.clone(), decided.clone());
        let message = incoming(reservation(id, partner));
        tasks.spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            let stream_id = wire::campaign_stream(id);
            let events = eventstore::read_stream(&mut tx, &stream_id, 1, None)
                .await
                .expect("stream");
            let mut campaign = Campaign::default();
            for event in &events {
                if let Ok(Some(Stored::Campaign(change))) = wire::stored(event) {
                    campaign.apply(&change);
                }
            }
            let command: CampaignCommand = wire::reserve_budget(&message.message);
            let decision = campaign.decide(&command).expect("room, as far as it knows");
            decided.wait().await;
            let streams = [StreamEvents {
                stream_id: &stream_id,
                stream_type: "campaign",
                expected: ExpectedVersion::Any,
                events: decision
                    .iter()
                    .map(wire::campaign_event)
                    .collect::<Vec<CampaignsEvent>>(),
            }];
            effects::commit_events(&mut tx, &message.properties, &id.to_string(), &streams)
                .await
                .expect("append");
            tx.commit().await.expect("commit");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("reservation task");
    }
    let held = held_after_each_event(&pool, id).await;
    assert_eq!(
        held.last(),
        Some(&(ATTEMPTS as i64 * COMMISSION)),
        "every stale decision was appended"
    );
    assert!(held.iter().any(|h| *h > ROOM * COMMISSION), "{held:?}");
}

/// Two instances of the service, each keeping the campaign it last decided on, take turns on one
/// campaign: each sees what the other appended since, so the budget holds across them and the
/// reservation past it is refused, by whichever instance gets it.
#[sqlx::test(migrations = false)]
async fn instances_taking_turns_see_each_others_reservations(db: PgPool) {
    const ROOM: i64 = 4;
    let pool = database(db, 4).await;
    let (id, partner) = running_campaign(&pool, ROOM).await;
    let instances = [BudgetReservation::default(), BudgetReservation::default()];
    let mut outcomes = Vec::new();
    for turn in 0..ROOM as usize + 2 {
        let message = incoming(reservation(id, partner));
        let conflicts = handle_like_the_runner(&pool, &instances[turn % 2], &message).await;
        assert_eq!(conflicts, 0, "one instance at a time never races");
        let mut conn = pool.acquire().await.expect("connection");
        let outcome = eventstore::load_outcome(&mut conn, message.properties.message_id)
            .await
            .expect("outcome")
            .expect("an outcome");
        outcomes.push(match outcome.outcome {
            Outcome::Succeeded => "reserved".to_owned(),
            Outcome::Rejected { code, .. } => code,
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        outcomes,
        [
            "reserved",
            "reserved",
            "reserved",
            "reserved",
            "budget_exhausted",
            "budget_exhausted"
        ]
    );
    assert_eq!(
        held_after_each_event(&pool, id).await.last(),
        Some(&(ROOM * COMMISSION))
    );
}

/// The campaign stream's version.
async fn version(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("select coalesce(max(version), 0) from events where stream_id = $1")
        .bind(wire::campaign_stream(id))
        .fetch_one(pool)
        .await
        .expect("version")
}

#[sqlx::test(migrations = false)]
async fn a_long_campaign_is_decided_from_its_snapshot_and_the_reservation_index(db: PgPool) {
    const ORDERS: i64 = SNAPSHOT_EVERY + 100;
    let pool = database(db, 4).await;
    let (id, partner) = running_campaign(&pool, ORDERS + 1).await;
    let handler = BudgetReservation::default();
    let mut first = None;
    for _ in 0..ORDERS {
        let message = incoming(reservation(id, partner));
        handle_like_the_runner(&pool, &handler, &message).await;
        first.get_or_insert(message.message);
    }
    let first = first.expect("a reservation");
    let stream = wire::campaign_stream(id);
    let (at, size): (i64, i32) =
        sqlx::query_as("select version, length(state) from snapshots where stream_id = $1")
            .bind(&stream)
            .fetch_one(&pool)
            .await
            .expect("a snapshot");
    assert_eq!(at, SNAPSHOT_EVERY);
    assert!(
        size < 1_000,
        "reservations stay out of the snapshot: {size} bytes"
    );
    let indexed: i64 = sqlx::query_scalar("select count(*) from reservation_index")
        .fetch_one(&pool)
        .await
        .expect("index");
    assert_eq!(indexed, ORDERS);

    // Take the events the snapshot covers away: deciding from the start would find no campaign,
    // so whatever follows is decided from the snapshot, the events after it and the index. Each
    // handler is new, as in a process that has not seen the campaign yet.
    sqlx::query("delete from events where stream_id = $1 and version <= $2")
        .bind(&stream)
        .bind(at)
        .execute(&pool)
        .await
        .expect("forget the covered events");
    let before = version(&pool, id).await;
    let again = incoming(first.clone());
    handle_like_the_runner(&pool, &BudgetReservation::default(), &again).await;
    assert_eq!(
        version(&pool, id).await,
        before,
        "an old reservation is known"
    );
    let last = incoming(reservation(id, partner));
    handle_like_the_runner(&pool, &BudgetReservation::default(), &last).await;
    assert_eq!(version(&pool, id).await, before + 1, "room for one more");
    let over = incoming(reservation(id, partner));
    handle_like_the_runner(&pool, &BudgetReservation::default(), &over).await;
    let mut conn = pool.acquire().await.expect("connection");
    let outcome = eventstore::load_outcome(&mut conn, over.properties.message_id)
        .await
        .expect("outcome")
        .expect("an outcome");
    assert!(
        matches!(&outcome.outcome, Outcome::Rejected { code, .. } if code == "budget_exhausted"),
        "the budget is spent: {outcome:?}"
    );
    drop(conn);

    let release = incoming(ReleaseBudget {
        reservation_id: first.reservation_id,
        campaign_id: id,
        reason: "compensated".into(),
    });
    handle_like_the_runner(&pool, &BudgetRelease::default(), &release).await;
    let released: bool =
        sqlx::query_scalar("select released from reservation_index where reservation_id = $1")
            .bind(first.reservation_id)
            .fetch_one(&pool)
            .await
            .expect("index");
    assert!(released);
    let room_again = incoming(reservation(id, partner));
    handle_like_the_runner(&pool, &BudgetReservation::default(), &room_again).await;
    assert_eq!(
        version(&pool, id).await,
        before + 3,
        "the release gave the first reservation's amount back"
    );
}
