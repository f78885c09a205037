//! The payout worker: it calls the provider for the payouts the request handler scheduled, outside
//! any transaction, and records each answer in a transaction of its own.
//!
//! A `payouts_due` row is committed with `PayoutAttempted` and deleted with the payment's outcome.
//! The worker claims due rows in short transactions (`FOR UPDATE SKIP LOCKED`) by pushing
//! `next_attempt_at` a lease into the future, so that instances share the work and a worker that
//! dies mid-call leaves a row that comes due again when its lease runs out. Every claim also sets
//! `ask_first`: the next claim of a row whose answer was never recorded asks the provider
//! (`GET` by key) instead of paying. The answers:
//!
//! - paid or declined: `PaymentCompleted` or `PaymentFailed`, and the row is deleted;
//! - no answer (a timeout, a broken connection): `PayoutOutcomeUnknown`, then ask the provider;
//! - the provider never saw the key: pay again with the same key (it executes a key at most once);
//! - unreachable or unavailable: the same call again after a growing delay, with no limit, since
//!   the money is owed (`attempts` and `last_error` show a stuck row).

use crate::domain::{PaymentCommand, PaymentRequest};
use crate::provider::{self, Payout, PayoutRequest, PayoutStatus, Provider};
use crate::stream;
use eventstore::Aggregate;
use messaging::Properties;
use messaging::consume::{Backoff, HandlerError};
use schemas::Message;
use schemas::commands::RequestPayment;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How the payout worker reaches the provider and paces its calls.
#[derive(Debug, Clone)]
pub struct PayoutSettings {
    /// The payout provider's base URL (plain http).
    pub provider_url: String,
    /// How long one provider call may take before its outcome counts as unknown.
    pub timeout: Duration,
    /// Delays between calls after a transient failure or an unknown outcome.
    pub backoff: Backoff,
    /// How long a claimed row stays with its worker; longer than a call and its recording.
    pub lease: Duration,
    /// The longest an idle worker sleeps: it wakes when the next row is due (a retry, or a lease
    /// run out), and a newly scheduled payout wakes it at once.
    pub poll: Duration,
    /// Provider calls in flight at once.
    pub concurrency: usize,
}

impl PayoutSettings {
    pub fn new(provider_url: impl Into<String>) -> Self {
        PayoutSettings {
            provider_url: provider_url.into(),
            timeout: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(60),
            },
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(5),
            concurrency: 16,
        }
    }
}

/// The channel notified when a payout is scheduled (migration 0003).
const CHANNEL: &str = "pulsaga_payouts";

/// A claimed row: one payout to call the provider for.
#[derive(Debug, Clone)]
pub struct Due {
    pub payment_id: Uuid,
    /// The properties of the command that requested the payment: the cause of the events the
    /// worker records, so they keep its correlation, saga and tenant.
    pub cause: Properties,
    /// Claims of this row so far, this one included.
    pub attempts: i32,
    /// Whether the provider may have seen the key without its answer being recorded.
    pub ask_first: bool,
}

/// Schedules a payment's payout, in the transaction that records `PayoutAttempted`.
pub async fn schedule(
    tx: &mut PgConnection,
    payment_id: Uuid,
    cause: &Properties,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into payouts_due (payment_id, properties) values ($1, $2)
         on conflict (payment_id) do nothing",
    )
    .bind(payment_id)
    .bind(Json(cause.to_map()))
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct DueRow {
    payment_id: Uuid,
    properties: Json<HashMap<String, String>>,
    attempts: i32,
    ask_first: bool,
}

/// Claims up to `limit` due rows for `lease`. A row whose properties cannot be read is left to
/// its lease and logged: it is never written that way.
pub async fn claim(pool: &PgPool, limit: usize, lease: Duration) -> Result<Vec<Due>, sqlx::Error> {
    let rows: Vec<DueRow> = sqlx::query_as(
        "with due as (
             select payment_id, ask_first from payouts_due
              where next_attempt_at <= now()
              order by next_attempt_at
              limit $1
                for update skip locked
         )
         update payouts_due p
            set next_attempt_at = now() + $2, attempts = p.attempts + 1, ask_first = true
           from due
          where p.payment_id = due.payment_id
         returning p.payment_id, p.properties, p.attempts, due.ask_first",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            match Properties::parse(&row.properties, RequestPayment::TOPIC.version()) {
                Ok(cause) => Some(Due {
                    payment_id: row.payment_id,
                    cause,
                    attempts: row.attempts,
                    ask_first: row.ask_first,
                }),
                Err(error) => {
                    tracing::error!(payment_id = %row.payment_id, %error, "payout row has unreadable properties");
                    None
                }
            }
        })
        .collect())
}

/// Calls the provider for due payouts until `shutdown`, then lets the calls in flight finish and
/// record their answers. When the database fails (a restart, a cut connection) it tries again
/// after a growing pause: rows stay due, and a claim's lease runs out if its worker died.
pub async fn run(
    pool: PgPool,
    provider: Provider,
    notifications: eventstore::Notifications,
    settings: PayoutSettings,
    shutdown: CancellationToken,
) {
    let mut in_flight = JoinSet::new();
    let mut failures = 0;
    let mut wakeup = notifications.wakeup(CHANNEL).await;
    while !shutdown.is_cancelled() {
        while let Some(done) = in_flight.try_join_next() {
            if let Err(error) = done {
                tracing::error!(%error, "a payout task panicked; its row comes due after its lease");
            }
        }
        let room = settings.concurrency.saturating_sub(in_flight.len());
        let claimed = if room > 0 {
            match claim(&pool, room, settings.lease).await {
                Ok(claimed) => {
                    failures = 0;
                    claimed
                }
                Err(error) => {
                    failures += 1;
                    let pause = settings.backoff.delay(failures);
                    tracing::warn!(%error, ?pause, "claiming payouts failed; trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let idle = claimed.is_empty();
        for due in claimed {
            in_flight.spawn(settle(
                pool.clone(),
                provider.clone(),
                settings.backoff,
                due,
            ));
        }
        if idle {
            // At least a moment: a due row another worker holds is due still.
            let next = until_next_due(&pool).await.unwrap_or(PAUSE);
            let wait = next.max(PAUSE).min(settings.poll);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = wakeup.wait(wait) => {}
                Some(_) = in_flight.join_next() => {}
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// The shortest pause of an idle worker.
const PAUSE: Duration = Duration::from_millis(50);

/// How long until the next payout row is due (zero if one is); `Duration::MAX` if there is none.
async fn until_next_due(pool: &PgPool) -> Result<Duration, sqlx::Error> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from min(next_attempt_at) - now())::float8 from payouts_due",
    )
    .fetch_one(pool)
    .await?;
    Ok(seconds.map_or(Duration::MAX, |s| Duration::from_secs_f64(s.max(0.0))))
}

/// What the provider's answer leads to.
#[derive(Debug)]
enum Next {
    /// The payment's outcome: record it and forget the row.
    Settle(PaymentCommand),
    /// The answer did not arrive: record that, then ask the provider.
    Unknown(String),
    /// The provider never saw the key: pay with it now.
    PayNow,
    /// Try the same call again later.
    Retry { ask: bool, error: String },
    /// The payment needs nothing more (its outcome is already recorded): forget the row.
    Done,
}

/// One row: the provider call its state calls for, then the answer recorded.
async fn settle(pool: PgPool, provider: Provider, backoff: Backoff, due: Due) {
    let next = match decide(&pool, &provider, &due).await {
        Ok(next) => next,
        Err(error) => Next::Retry {
            ask: due.ask_first,
            error: error.to_string(),
        },
    };
    tracing::debug!(payment_id = %due.payment_id, attempts = due.attempts, ?next, "payout call done");
    if let Err(error) = record(&pool, &due, &next, backoff).await {
        tracing::warn!(payment_id = %due.payment_id, %error, "recording a payout answer failed; asking the provider again");
        let released = sqlx::query(
            "update payouts_due set ask_first = true, next_attempt_at = now() + $2, last_error = $3
              where payment_id = $1",
        )
        .bind(due.payment_id)
        .bind(backoff.delay(attempt_number(&due)))
        .bind(error.to_string())
        .execute(&pool)
        .await;
        // If even that fails, the row comes due again when its lease runs out.
        if let Err(error) = released {
            tracing::warn!(payment_id = %due.payment_id, %error, "releasing a payout row failed");
        }
    }
}

fn attempt_number(due: &Due) -> u32 {
    u32::try_from(due.attempts).unwrap_or(1)
}

async fn decide(pool: &PgPool, provider: &Provider, due: &Due) -> Result<Next, HandlerError> {
    let mut conn = pool.acquire().await?;
    let (payment, _) = stream::load(&mut conn, due.payment_id).await?;
    drop(conn);
    let Some(request) = payment.request().filter(|_| payment.needs_resolution()) else {
        return Ok(Next::Done);
    };
    let key = request.payment_id.to_string();
    if due.ask_first {
        return Ok(match provider.lookup(&key).await {
            Ok(Some(payout)) => settled(request.payment_id, payout),
            Ok(None) => Next::PayNow,
            Err(error) => Next::Retry {
                ask: true,
                error: eventstore::error_chain(&error),
            },
        });
    }
    Ok(match provider.pay(&payout_request(request)).await {
        Ok(payout) => settled(request.payment_id, payout),
        Err(error @ (provider::Error::Unreachable(_) | provider::Error::Unavailable { .. })) => {
            Next::Retry {
                ask: false,
                error: eventstore::error_chain(&error),
            }
        }
        Err(error @ (provider::Error::NoAnswer(_) | provider::Error::KeyConflict { .. })) => {
            tracing::warn!(payment_id = %request.payment_id, error = eventstore::error_chain(&error), "payout outcome unknown; asking the provider");
            // The event carries the kind of failure, not the provider's address.
            Next::Unknown(error.to_string())
        }
        Err(error @ provider::Error::Refused { .. }) => Next::Settle(PaymentCommand::Fail {
            payment_id: request.payment_id,
            reason: error.to_string(),
        }),
    })
}

fn payout_request(request: &PaymentRequest) -> PayoutRequest {
    PayoutRequest {
        idempotency_key: request.payment_id.to_string(),
        payment_id: request.payment_id,
        partner_id: request.partner_id,
        amount: request.amount.amount,
        currency: request.amount.currency.clone(),
    }
}

fn settled(payment_id: Uuid, payout: Payout) -> Next {
    Next::Settle(match payout.status {
        PayoutStatus::Paid => PaymentCommand::Complete {
            payment_id,
            provider_reference: payout.reference,
        },
        PayoutStatus::Declined => PaymentCommand::Fail {
            payment_id,
            reason: payout
                .reason
                .unwrap_or_else(|| "declined by the payout provider".into()),
        },
    })
}

/// Records `next` in one transaction: the payment's events and the row's new state.
async fn record(
    pool: &PgPool,
    due: &Due,
    next: &Next,
    backoff: Backoff,
) -> Result<(), HandlerError> {
    let mut tx = pool.begin().await?;
    // Held until commit, so that two workers never record one row at once.
    let held: Option<Uuid> =
        sqlx::query_scalar("select payment_id from payouts_due where payment_id = $1 for update")
            .bind(due.payment_id)
            .fetch_optional(&mut *tx)
            .await?;
    if held.is_none() {
        // Another worker recorded this payout's outcome after our lease ran out.
        return Ok(());
    }
    let delay = backoff.delay(attempt_number(due));
    match next {
        Next::Settle(command) => {
            apply(&mut tx, due, command).await?;
            forget(&mut tx, due.payment_id).await?;
        }
        Next::Done => forget(&mut tx, due.payment_id).await?,
        Next::Unknown(reason) => {
            let command = PaymentCommand::RecordOutcomeUnknown {
                payment_id: due.payment_id,
                reason: reason.clone(),
            };
            apply(&mut tx, due, &command).await?;
            reschedule(&mut tx, due.payment_id, true, delay, reason).await?;
        }
        Next::PayNow => {
            let error = "the provider has no record of the key";
            reschedule(&mut tx, due.payment_id, false, Duration::ZERO, error).await?;
        }
        Next::Retry { ask, error } => {
            tracing::warn!(payment_id = %due.payment_id, attempts = due.attempts, ?delay, %error, "payout call failed; retrying");
            reschedule(&mut tx, due.payment_id, *ask, delay, error).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Decides `command` on the payment and commits its events, caused by the requesting command.
async fn apply(
    tx: &mut PgConnection,
    due: &Due,
    command: &PaymentCommand,
) -> Result<(), HandlerError> {
    let (payment, version) = stream::load(tx, due.payment_id).await?;
    match payment.decide(command) {
        Ok(events) if events.is_empty() => Ok(()),
        Ok(events) => stream::commit(tx, &due.cause, due.payment_id, version, &events).await,
        // The provider contradicts an outcome already recorded: that outcome stands, and an
        // operator has to look at the provider.
        Err(error) => {
            tracing::error!(payment_id = %due.payment_id, code = error.code(), %error, "payout answer contradicts the payment");
            Ok(())
        }
    }
}

async fn forget(tx: &mut PgConnection, payment_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from payouts_due where payment_id = $1")
        .bind(payment_id)
        .execute(tx)
        .await?;
    Ok(())
}

async fn reschedule(
    tx: &mut PgConnection,
    payment_id: Uuid,
    ask_first: bool,
    delay: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update payouts_due set ask_first = $2, next_attempt_at = now() + $3, last_error = $4
          where payment_id = $1",
    )
    .bind(payment_id)
    .bind(ask_first)
    .bind(delay)
    .bind(error)
    .execute(tx)
    .await?;
    Ok(())
}
