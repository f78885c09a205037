//! The coordinator: feeds inputs to sagas durably. One input is one transaction: the saga's row
//! is locked (so a saga's inputs queue one after another), its log is loaded and folded, the
//! definition decides, and the new entries are appended (with the expected version, which still
//! decides between two starts of one saga), the commands they carry are queued in the outbox
//! (keyed by saga id), their timers are stored, and the saga's row is updated. Inputs arrive from
//! the services' event topics (replies and triggers), from the timer worker, and from operators.

mod record;

use crate::definition::{CATALOGUE, Entry, Input, Saga};
use crate::wire::{self, stream_id};
use eventstore::{Append, ExpectedVersion, NewEvent, outbox};
use messaging::Properties;
use messaging::consume::{Handler, HandlerError, Incoming};
use record::{Flow, answered, count_transition, store};
use schemas::events::{CampaignsEvent, CommissionsEvent, PaymentsEvent, TrackingEvent};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

pub fn now_micros() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// A saga's state (none before it started), its log and the log's version. The saga runs under
/// the definition its log started with. One this coordinator's catalogue lacks (a newer one,
/// during a rolling deploy) makes the input wait, like a database outage, and be tried again,
/// never dead-lettered: until a coordinator that has the version takes the saga's messages over.
pub async fn load(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<(Option<Saga>, Vec<Entry>, ExpectedVersion), HandlerError> {
    let events = eventstore::read_stream(conn, &stream_id(saga_id), 1, None).await?;
    let logged = events.iter().map(|e| (e.version, e.payload.as_slice()));
    resume(saga_id, logged)
}

/// The saga a log's `(version, payload)` entries come to (see [`load`]).
fn resume<'a>(
    saga_id: Uuid,
    logged: impl Iterator<Item = (i64, &'a [u8])>,
) -> Result<(Option<Saga>, Vec<Entry>, ExpectedVersion), HandlerError> {
    let mut version = ExpectedVersion::NoStream;
    let mut entries = Vec::new();
    for (at, payload) in logged {
        let entry = wire::decode_entry(payload).map_err(|e| {
            HandlerError::Transient(format!("saga log of {saga_id} unreadable: {e}"))
        })?;
        entries.push(entry);
        version = ExpectedVersion::Exact(at);
    }
    let saga = match entries.is_empty() {
        true => None,
        false => Some(
            CATALOGUE
                .resume(&entries)
                .map_err(|e| HandlerError::Unavailable(format!("saga {saga_id}: {e}")))?,
        ),
    };
    Ok((saga, entries, version))
}

/// Where an input came from: the message (if any) that carried it, for the log's metadata and
/// the properties of the commands it causes.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    pub message_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub traceparent: Option<String>,
}

impl Cause {
    fn of(properties: &Properties) -> Cause {
        Cause {
            message_id: Some(properties.message_id),
            correlation_id: properties.correlation_id.or(Some(properties.message_id)),
            tenant: properties.tenant.clone(),
            actor: properties.actor.clone(),
            traceparent: properties.traceparent.clone(),
        }
    }
}

/// The flow a saga belongs to, from its row.
struct Row {
    correlation_id: Option<Uuid>,
    tenant: Option<String>,
    actor: Option<String>,
}

/// A saga as an input finds it: its row (`None`: the saga has none yet, or was archived), its
/// state and its log's version.
struct Locked {
    row: Option<Row>,
    /// The saga has no row because it was archived: it takes no more input.
    archived: bool,
    saga: Option<Saga>,
    version: ExpectedVersion,
    /// When the saga started (microseconds since the epoch), from its log's first entry.
    started: Option<i64>,
}

/// One row of `saga_locked_log`.
#[derive(sqlx::FromRow)]
struct LockedLog {
    row_found: bool,
    archived: bool,
    correlation_id: Option<Uuid>,
    tenant: Option<String>,
    actor: Option<String>,
    version: Option<i64>,
    payload: Option<Vec<u8>>,
}

/// Locks the saga's row (if the saga exists) for the input's transaction, then loads the saga, in
/// one round trip (the `saga_locked_log` function). Every input of a saga takes this lock before
/// anything else, so a saga's inputs (replies, timers, operators) queue here one after another
/// instead of racing for its log or deadlocking on its timer rows.
async fn lock(tx: &mut PgConnection, saga_id: Uuid) -> Result<Locked, HandlerError> {
    let rows: Vec<LockedLog> = sqlx::query_as("select * from saga_locked_log($1)")
        .bind(saga_id)
        .fetch_all(&mut *tx)
        .await?;
    let row = rows.first().filter(|r| r.row_found).map(|r| Row {
        correlation_id: r.correlation_id,
        tenant: r.tenant.clone(),
        actor: r.actor.clone(),
    });
    let logged = rows
        .iter()
        .filter_map(|r| Some((r.version?, r.payload.as_deref()?)));
    let (saga, entries, version) = resume(saga_id, logged)?;
    let started = match entries.first() {
        Some(Entry::Started { at, .. }) => Some(*at),
        _ => None,
    };
    Ok(Locked {
        row,
        archived: rows.first().is_some_and(|r| r.archived),
        saga,
        version,
        started,
    })
}

/// Feeds one input to a saga inside `tx`; returns the entries appended (none: the input did not
/// fit, e.g. a duplicate reply or a stale timer).
pub async fn feed(
    tx: &mut PgConnection,
    saga_id: Uuid,
    input: &Input,
    cause: &Cause,
) -> Result<Vec<Entry>, HandlerError> {
    let locked = lock(tx, saga_id).await?;
    feed_locked(tx, saga_id, locked, input, cause).await
}

/// [`feed`] once the saga's row is locked.
async fn feed_locked(
    tx: &mut PgConnection,
    saga_id: Uuid,
    Locked {
        row,
        archived,
        saga,
        version,
        started,
    }: Locked,
    input: &Input,
    cause: &Cause,
) -> Result<Vec<Entry>, HandlerError> {
    if archived {
        return Ok(vec![]);
    }
    let saga = match (saga, input) {
        (Some(saga), _) => saga,
        (None, Input::Start { definition, .. }) => Saga::new(saga_id, definition),
        (None, _) => return Ok(vec![]),
    };
    let entries = saga.on_input(input);
    if entries.is_empty() {
        return Ok(entries);
    }
    let mut next = saga.clone();
    for entry in &entries {
        next.apply(entry);
    }
    let flow = Flow::of(saga_id, row, cause);
    let logged: Vec<NewEvent> = entries
        .iter()
        .map(|entry| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: wire::entry_type(entry).to_owned(),
            schema_version: 1,
            payload: wire::encode_entry(entry),
            metadata: flow.metadata(),
        })
        .collect();
    let (messages, timers) = flow.outgoing(&entries)?;
    let log = Append {
        stream_id: &stream_id(saga_id),
        stream_type: "saga",
        expected: version,
        events: &logged,
    };
    let stored = store(&next, &flow, answered(&entries), &timers);
    let parts: Vec<eventstore::Part> = stored.iter().map(|part| &**part as _).collect();
    eventstore::write_with(tx, &[log], &messages, None, &parts).await?;
    if next.status != saga.status {
        let age = started.map(|at| (now_micros() - at) as f64 / 1e6);
        count_transition(&next, age);
    }
    Ok(entries)
}

/// Feeds an answer to the saga whose command caused it (its `saga_id` and `causation_id`).
async fn answer(
    tx: &mut PgConnection,
    properties: &Properties,
    answer: Option<crate::definition::Answer>,
) -> Result<(), HandlerError> {
    let (Some(answer), Some(saga_id), Some(command_id)) =
        (answer, properties.saga_id, properties.causation_id)
    else {
        return Ok(());
    };
    let locked = lock(tx, saga_id).await?;
    if locked.row.is_none() {
        tracing::warn!(%saga_id, "answer for an unknown saga ignored");
        return Ok(());
    }
    let input = Input::Reply {
        command_id,
        message_id: properties.message_id,
        answer,
        at: now_micros(),
    };
    let cause = Cause::of(properties);
    feed_locked(tx, saga_id, locked, &input, &cause)
        .await
        .map(drop)
}

/// `tracking-events`: a recorded tracking event starts its saga; confirmations, failures and
/// refusals answer saga commands.
#[derive(Debug, Default)]
pub struct TrackingReplies;

impl Handler for TrackingReplies {
    type Message = TrackingEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<TrackingEvent>,
    ) -> Result<(), HandlerError> {
        if let Some((saga_id, saga_type, data)) = wire::trigger(&incoming.message) {
            let definition =
                CATALOGUE
                    .latest(saga_type)
                    .ok_or_else(|| HandlerError::Permanent {
                        code: "no_saga_definition".into(),
                        reason: format!("no definition of {}", saga_type.name()),
                    })?;
            let input = Input::Start {
                saga_id,
                definition,
                data,
                at: now_micros(),
            };
            return feed(tx, saga_id, &input, &Cause::of(&incoming.properties))
                .await
                .map(drop);
        }
        answer(
            tx,
            &incoming.properties,
            wire::tracking_answer(&incoming.message),
        )
        .await
    }
}

#[derive(Debug, Default)]
pub struct CampaignsReplies;

impl Handler for CampaignsReplies {
    type Message = CampaignsEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<CampaignsEvent>,
    ) -> Result<(), HandlerError> {
        answer(
            tx,
            &incoming.properties,
            wire::campaigns_answer(&incoming.message),
        )
        .await
    }
}

#[derive(Debug, Default)]
pub struct CommissionsReplies;

impl Handler for CommissionsReplies {
    type Message = CommissionsEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<CommissionsEvent>,
    ) -> Result<(), HandlerError> {
        answer(
            tx,
            &incoming.properties,
            wire::commissions_answer(&incoming.message),
        )
        .await
    }
}

#[derive(Debug, Default)]
pub struct PaymentsReplies;

impl Handler for PaymentsReplies {
    type Message = PaymentsEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<PaymentsEvent>,
    ) -> Result<(), HandlerError> {
        answer(
            tx,
            &incoming.properties,
            wire::payments_answer(&incoming.message),
        )
        .await
    }
}

/// Feeds due timers to their sagas, one transaction each, until `stop`. Several coordinators may
/// run: a timer is claimed with SKIP LOCKED and deleted in the transaction that feeds it. The
/// commands they cause go to `handoff`'s relay (see `outbox::handing_to`), if given.
///
/// Between rounds it sleeps until the next timer is due, `longest` at most: a timer set
/// meanwhile is due a step's timeout after it was set, so it fires at most `longest` minus that
/// timeout late (never, for timeouts of `longest` or more). When the database fails it waits
/// `longest` and looks again: the timers stay due.
pub async fn run_timers(
    pool: &PgPool,
    handoff: Option<&outbox::Handoff>,
    longest: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let fired = fire_due_timers(pool, handoff, 64)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "firing saga timers failed; trying again");
                0
            });
        if fired == 0 {
            // At least a moment: a due timer another coordinator holds, or one that failed to
            // fire, is due still.
            let next = until_next_timer(pool).await.unwrap_or(longest);
            let wait = next.max(TIMER_PAUSE).min(longest);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The shortest pause between two rounds of timers that fired none.
const TIMER_PAUSE: Duration = Duration::from_millis(50);

/// How long until the next timer is due (zero if one is); `Duration::MAX` if there is none.
async fn until_next_timer(pool: &PgPool) -> Result<Duration, eventstore::Error> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from min(due_at) - now())::float8 from saga_timers",
    )
    .fetch_one(pool)
    .await?;
    Ok(seconds.map_or(Duration::MAX, |s| Duration::from_secs_f64(s.max(0.0))))
}

/// Fires up to `limit` due timers; returns how many fired. A due timer is found without a lock,
/// then its saga's row is locked (the order every input takes) and the timer deleted: a timer
/// another coordinator or a reply deleted meanwhile is gone and is passed over. The commands
/// they cause go to `handoff`'s relay, if given.
pub async fn fire_due_timers(
    pool: &PgPool,
    handoff: Option<&outbox::Handoff>,
    limit: usize,
) -> Result<usize, eventstore::Error> {
    let mut fired = 0;
    let mut passed = Vec::new();
    while fired + passed.len() < limit {
        let due: Option<(Uuid, Uuid, i32)> = sqlx::query_as(
            "select saga_id, command_id, attempt from saga_timers
              where due_at <= now() and not (command_id = any($1))
              order by due_at limit 1",
        )
        .bind(&passed)
        .fetch_optional(pool)
        .await?;
        let Some((saga_id, command_id, attempt)) = due else {
            break;
        };
        // Ok only once committed: what it queued is handed to the relay then.
        let transaction = async {
            let mut tx = eventstore::begin(pool).await.map_err(Unfired::Failed)?;
            let fed = fire(&mut tx, saga_id, command_id, attempt).await;
            if let Err(error) = &fed {
                // Left in place (rolled back) and tried again on the next round; the other due
                // timers fire meanwhile.
                tracing::warn!(%saga_id, %command_id, %error, "firing a saga timer failed");
            }
            match fed {
                Ok(true) => tx.commit().await.map_err(|e| Unfired::Failed(e.into())),
                _ => Err(tx
                    .rollback()
                    .await
                    .map_or_else(|e| Unfired::Failed(e.into()), |()| Unfired::Passed)),
            }
        };
        match outbox::handing_to(handoff, transaction).await {
            Ok(()) => fired += 1,
            Err(Unfired::Passed) => passed.push(command_id),
            Err(Unfired::Failed(error)) => return Err(error),
        }
    }
    Ok(fired)
}

/// Why a due timer did not fire: it was gone, or failed to (rolled back, either way); or the
/// database failed.
enum Unfired {
    Passed,
    Failed(eventstore::Error),
}

/// Feeds one timer's timeout to its saga, if the timer is still there once the saga is locked.
async fn fire(
    tx: &mut PgConnection,
    saga_id: Uuid,
    command_id: Uuid,
    attempt: i32,
) -> Result<bool, HandlerError> {
    let locked = lock(tx, saga_id).await?;
    let deleted = sqlx::query(
        "delete from saga_timers where saga_id = $1 and command_id = $2 and attempt = $3",
    )
    .bind(saga_id)
    .bind(command_id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    if locked.row.is_none() {
        // A timer of no saga: deleted, nothing to feed.
        return Ok(true);
    }
    let input = Input::Timeout {
        command_id,
        attempt: u32::try_from(attempt).unwrap_or(0),
        at: now_micros(),
    };
    feed_locked(tx, saga_id, locked, &input, &Cause::default()).await?;
    Ok(true)
}

/// Records an operator's action on a saga and feeds it; returns the entries it caused (none:
/// the action does not apply to the saga's state).
pub async fn operate(
    pool: &PgPool,
    saga_id: Uuid,
    action: crate::definition::OperatorAction,
    actor: &str,
    reason: Option<&str>,
) -> Result<Option<Vec<Entry>>, HandlerError> {
    let mut tx = pool.begin().await?;
    let locked = lock(&mut tx, saga_id).await?;
    if locked.row.is_none() {
        return Ok(None);
    }
    let cause = Cause {
        actor: Some(actor.to_owned()),
        ..Cause::default()
    };
    let input = Input::Operator {
        action,
        actor: actor.to_owned(),
        reason: reason.map(str::to_owned),
        at: now_micros(),
    };
    let entries = feed_locked(&mut tx, saga_id, locked, &input, &cause).await?;
    tx.commit().await?;
    Ok(Some(entries))
}
