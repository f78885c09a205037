//! The transactional outbox: messages are written in the transaction that caused them, and relays
//! publish them afterwards.
//!
//! Several relays may drain one outbox. A relay claims rows by leasing them: it locks candidate
//! rows with `FOR UPDATE SKIP LOCKED` (so relays never wait on each other) and keeps only the rows
//! whose every earlier unpublished row of the same key is in its own claim. A key's rows are
//! therefore leased by at most one relay at a time, as a prefix in id order, and per-key order
//! holds however many relays run. The lease (not a held transaction) marks the claim, so a relay
//! waiting for the broker keeps no transaction open; a relay that dies loses its lease when it
//! expires and another relay takes the rows over. Rows are marked published only after the broker
//! confirmed them: delivery is at least once, and consumers deduplicate by message id.
//!
//! A process's own transactions hand what they queue to the process's relay ([`Handoff`]): the
//! rows are written already leased to it, and once the transaction has committed the relay is
//! given them in memory, with their ids, so it neither claims them nor is notified of them. A
//! row is written leased only when its key has no unpublished row or its newest is that relay's
//! too; otherwise it is written free, and relays claim it as any other. (Checking the newest
//! row alone is one index probe however long a busy key's queue; it holds because a relay
//! releases a key's rows together, and claims take a key's rows as a prefix.) Each leased row
//! names the row it follows (`after`), so that the relay publishes it only after that one, even
//! if the two transactions' handoffs reach it in the other order. The outbox stays the record: if
//! the process dies before its relay has published them, the lease expires and any relay claims
//! them.

use crate::Error;

/// The channel notified at the commit of every transaction that queued messages no relay holds:
/// relays claim what it announces.
pub const CHANNEL: &str = "pulsaga_outbox";

/// The channel on which a process wakes its own workers (see `Notifications::wake`) when one of
/// its transactions committed messages it handed to its relay: the database notifies no one of
/// those.
pub const HANDED: &str = "pulsaga_outbox_handed";

use crate::Notifications;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A message to publish: its topic, its key (the aggregate or saga id; per-key order is kept),
/// its body and its properties (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub properties: BTreeMap<String, String>,
}

/// A message a relay has leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    /// How many times a relay has claimed this row, this claim included.
    pub attempts: i32,
    pub message: Message,
}

/// Messages a transaction wrote leased to its process's relay, handed to it once it committed.
#[derive(Debug)]
pub struct Handed {
    pub rows: Vec<HandedRow>,
    /// When the first of them was written: their leases run from about then.
    pub since: Instant,
}

/// A message written leased to the relay, and the unpublished row of its key (the relay's too)
/// that was the key's newest then, if any: it goes out after that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedRow {
    pub row: Claimed,
    pub after: Option<i64>,
}

/// Where a process's transactions hand what they queue: its relay, by name, and the lease it
/// holds such rows for. See the module's description, and [`handing_to`].
#[derive(Debug, Clone)]
pub struct Handoff {
    relay: Arc<str>,
    lease: Duration,
    relay_rows: mpsc::UnboundedSender<Handed>,
    notifications: Notifications,
}

impl Handoff {
    /// A handoff to the relay `relay` (its lease name), which receives from the returned end.
    /// Once that end is dropped (the relay stopped) messages are written free again.
    pub fn new(
        relay: &str,
        lease: Duration,
        notifications: Notifications,
    ) -> (Handoff, mpsc::UnboundedReceiver<Handed>) {
        let (relay_rows, received) = mpsc::unbounded_channel();
        let handoff = Handoff {
            relay: relay.into(),
            lease,
            relay_rows,
            notifications,
        };
        (handoff, received)
    }
}

/// What the statements of a transaction in [`handing_to`] queued leased to its relay.
struct Handing {
    relay: Arc<str>,
    lease: Duration,
    rows: RefCell<Vec<HandedRow>>,
    since: RefCell<Option<Instant>>,
}

tokio::task_local! {
    static HANDING: Handing;
}

/// Runs `transaction`, whose messages are written leased to `handoff`'s relay (see the module's
/// description); if it returns `Ok` they are handed to the relay, and the process's workers on
/// [`HANDED`] are woken. `transaction` returns `Ok` only once it has committed: on `Err` the
/// messages are taken to be rolled back, and their leases lapse in any case.
pub async fn handing_to<T, E>(
    handoff: Option<&Handoff>,
    transaction: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(handoff) = handoff.filter(|h| !h.relay_rows.is_closed()) else {
        return transaction.await;
    };
    let handing = Handing {
        relay: handoff.relay.clone(),
        lease: handoff.lease,
        rows: RefCell::default(),
        since: RefCell::default(),
    };
    let (result, handed) = HANDING
        .scope(handing, async {
            let result = transaction.await;
            let handed = HANDING.with(|h| (h.rows.take(), *h.since.borrow()));
            (result, handed)
        })
        .await;
    if let (Ok(_), (rows, Some(since))) = (&result, handed)
        && !rows.is_empty()
    {
        let _ = handoff.relay_rows.send(Handed { rows, since });
        handoff.notifications.wake(HANDED);
    }
    result
}

/// The relay the current transaction writes its messages leased to, and for how long.
pub(crate) fn lease() -> Option<(Arc<str>, Duration)> {
    HANDING.try_with(|h| (h.relay.clone(), h.lease)).ok()
}

/// A row as the outbox's insert returns it: its id, whether it was written leased, and the row
/// it follows (see [`HandedRow`]).
pub(crate) type Written = (i64, bool, Option<i64>);

/// Notes that `messages` were written as `rows` (in order) in the current transaction: the
/// leased ones go to the relay when it commits.
pub(crate) fn written(messages: &[Message], rows: &[Written]) {
    let _ = HANDING.try_with(|h| {
        h.since.borrow_mut().get_or_insert_with(Instant::now);
        let mut handed = h.rows.borrow_mut();
        for (message, (id, leased, after)) in messages.iter().zip(rows) {
            if *leased {
                let row = Claimed {
                    id: *id,
                    attempts: 1,
                    message: message.clone(),
                };
                handed.push(HandedRow { row, after: *after });
            }
        }
    });
}

/// Adds messages to the outbox in the caller's transaction, in order.
pub async fn enqueue(conn: &mut PgConnection, messages: &[Message]) -> Result<(), Error> {
    crate::write(conn, &[], messages, None).await.map(drop)
}

/// The insert of `messages` into the outbox, in order, its arguments bound; leased to `lease`'s
/// relay where the key allows (see the module's description). It returns each row as
/// [`Written`]: `id`, `leased` and `after`.
pub(crate) fn push_enqueue(
    query: &mut QueryBuilder<Postgres>,
    messages: &[Message],
    lease: Option<&(Arc<str>, Duration)>,
) {
    let properties: Vec<Json<Map<String, Value>>> = messages
        .iter()
        .map(|m| {
            Json(
                m.properties
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        })
        .collect();
    let keys: Vec<String> = messages.iter().map(|m| m.key.clone()).collect();
    let lease = lease.map(|(relay, lease)| (relay.to_string(), lease.as_secs_f64()));
    if lease.is_some() {
        // Each key's newest unpublished row: one probe of the key's pending index from its end.
        query
            .push(
                "with newest as (
                     select k.key, n.id, n.lease_owner
                       from (select distinct key from unnest(",
            )
            .push_bind(keys.clone())
            .push(
                "::text[]) key) k
                      cross join lateral (
                          select o.id, o.lease_owner from outbox o
                           where o.key = k.key and o.published_at is null
                           order by o.id desc limit 1) n) ",
            );
    }
    query.push("insert into outbox (topic, key, payload, properties");
    match &lease {
        Some((_, seconds)) => query
            .push(
                ", lease_owner, lease_until, attempts)
                 select m.topic, m.key, m.payload, m.properties, l.owner,
                        case when l.owner is not null then now() + make_interval(secs => ",
            )
            .push_bind(*seconds)
            .push("::float8) end, (l.owner is not null)::int"),
        None => query.push(") select m.topic, m.key, m.payload, m.properties"),
    };
    query
        .push(" from unnest(")
        .push_bind(messages.iter().map(|m| m.topic.clone()).collect::<Vec<_>>())
        .push("::text[], ")
        .push_bind(keys)
        .push("::text[], ")
        .push_bind(
            messages
                .iter()
                .map(|m| m.payload.clone())
                .collect::<Vec<_>>(),
        )
        .push("::bytea[], ")
        .push_bind(properties)
        .push("::jsonb[]) with ordinality as m (topic, key, payload, properties, ord)");
    match lease {
        Some((relay, _)) => {
            query
                .push(" left join newest n on n.key = m.key cross join lateral (select case when n.id is null or n.lease_owner = ")
                .push_bind(relay.clone())
                .push(" then ")
                .push_bind(relay)
                .push(
                    "::text end as owner offset 0) l
                     order by m.ord
                     returning id, lease_owner is not null as leased,
                               (select n.id from newest n where n.key = outbox.key) as after",
                );
        }
        None => {
            query.push(" order by m.ord returning id, false as leased, null::bigint as after");
        }
    }
}

/// Queues again what the message `cause` led to, once each message id, in the order first
/// queued, so that a sender whose answer was lost gets it again under the same message ids
/// (consumers skip what they already had). Does nothing while any of it still waits to be
/// published: that copy is the answer. Returns how many messages were queued.
pub async fn requeue_caused_by(conn: &mut PgConnection, cause: Uuid) -> Result<u64, Error> {
    let queued = sqlx::query(
        "insert into outbox (topic, key, payload, properties)
         select topic, key, payload, properties
           from (select distinct on (properties ->> 'message_id') id, topic, key, payload, properties
                   from outbox
                  where properties ->> 'causation_id' = $1
                  order by properties ->> 'message_id', id) first_sent
          where not exists (select 1 from outbox
                             where properties ->> 'causation_id' = $1 and published_at is null)
          order by id",
    )
    .bind(cause.to_string())
    .execute(conn)
    .await?;
    Ok(queued.rows_affected())
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    attempts: i32,
    topic: String,
    key: String,
    payload: Vec<u8>,
    properties: Json<BTreeMap<String, String>>,
}

/// Leases up to `limit` unpublished messages to `relay` for `lease`, oldest first. Publish them in
/// the returned order; if one fails, publish nothing more of its key before it succeeds.
///
/// A locked row is claimable when its key has no earlier unpublished row outside the claim: the
/// first such row is looked up once per key of the claim (`waiting`, materialized so that the
/// lookup is not repeated for every row), walking the key's index entries from its oldest. Asked
/// row by row instead, a claim of 128 rows of one busy key took 15 ms rather than 1.
pub async fn claim(
    conn: &mut PgConnection,
    relay: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, Error> {
    let mut rows: Vec<ClaimedRow> = sqlx::query_as(
        "with locked as (
             select id, key from outbox
              where published_at is null and (lease_until is null or lease_until < now())
              order by id
              limit $2
              for update skip locked
         ), waiting as materialized (
             select k.key, (select min(o.id) from outbox o
                             where o.key = k.key and o.published_at is null
                               and o.id not in (select id from locked)) as id
               from (select distinct key from locked) k
         ), claimable as (
             select l.id from locked l join waiting w on w.key = l.key
              where w.id is null or l.id < w.id
         )
         update outbox o
            set lease_owner = $1, lease_until = now() + make_interval(secs => $3),
                attempts = o.attempts + 1
           from claimable c
          where o.id = c.id
         returning o.id, o.attempts, o.topic, o.key, o.payload, o.properties",
    )
    .bind(relay)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?;
    rows.sort_unstable_by_key(|r| r.id);
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            id: r.id,
            attempts: r.attempts,
            message: Message {
                topic: r.topic,
                key: r.key,
                payload: r.payload,
                properties: r.properties.0,
            },
        })
        .collect())
}

/// Marks messages the broker has confirmed as published. Returns how many rows `relay` still held.
pub async fn mark_published(
    conn: &mut PgConnection,
    relay: &str,
    ids: &[i64],
) -> Result<u64, Error> {
    let done = sqlx::query(
        "update outbox set published_at = now(), lease_owner = null, lease_until = null
          where id = any($2) and lease_owner = $1 and published_at is null",
    )
    .bind(relay)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Gives up `relay`'s leases on messages it could not publish, so that any relay may retry them
/// at once instead of after the lease expires.
pub async fn release(conn: &mut PgConnection, relay: &str, ids: &[i64]) -> Result<u64, Error> {
    let released = sqlx::query(
        "update outbox set lease_owner = null, lease_until = null
          where id = any($2) and lease_owner = $1 and published_at is null",
    )
    .bind(relay)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(released.rows_affected())
}

/// Vacuums and analyses the outbox. A row leaves the queue by an update (see `mark_published`),
/// so every published message leaves a dead row and a dead entry in the pending indexes; until
/// they are vacuumed each claim walks over them, and without fresh statistics the planner takes
/// the pending rows for a handful and sorts them all. Claims then cost more the longer the
/// queue, and a relay that falls behind falls further behind. Only the columns a claim's plan
/// depends on are analysed, from a small sample (migration 0013). Not in a transaction.
pub async fn vacuum(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::raw_sql("vacuum (analyze) outbox (id, key, lease_until, published_at)")
        .execute(conn)
        .await?;
    Ok(())
}

/// How many messages wait to be published.
pub async fn pending(conn: &mut PgConnection) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("select count(*) from outbox where published_at is null")
            .fetch_one(conn)
            .await?,
    )
}
