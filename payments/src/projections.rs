//! Payments' read models: each payment with its status, and what each partner was paid (and had
//! clawed back) per currency. Both are fed from the service's global log by one projection and can be rebuilt from
//! zero.

use crate::domain::{Clawback, PaymentEvent, PaymentRequest};
use crate::wire;
use eventstore::projection::Projection;
use eventstore::{Error, RecordedEvent};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// The `payments` and `partner_payouts` tables.
#[derive(Debug, Default)]
pub struct PaymentViews;

async fn requested(
    tx: &mut PgConnection,
    r: &PaymentRequest,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "insert into payments (payment_id, commission_id, partner_id, campaign_id, amount, currency,
                               status, requested_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, 'requested', $7, $7)",
    )
    .bind(r.payment_id)
    .bind(r.commission_id)
    .bind(r.partner_id)
    .bind(r.campaign_id)
    .bind(r.amount.amount)
    .bind(&r.amount.currency)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves a payment to `status`; the reference and reason are those of the new status.
async fn moved(
    tx: &mut PgConnection,
    payment_id: Uuid,
    status: &str,
    (reference, reason): (Option<&str>, Option<&str>),
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "update payments set status = $2, provider_reference = $3, reason = $4, updated_at = $5
          where payment_id = $1",
    )
    .bind(payment_id)
    .bind(status)
    .bind(reference)
    .bind(reason)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn completed(
    tx: &mut PgConnection,
    payment_id: Uuid,
    reference: &str,
    at: OffsetDateTime,
) -> Result<(), Error> {
    moved(tx, payment_id, "completed", (Some(reference), None), at).await?;
    sqlx::query(
        "insert into partner_payouts (partner_id, currency, paid_amount, paid_count)
         select partner_id, currency, amount, 1 from payments where payment_id = $1
         on conflict (partner_id, currency) do update
            set paid_amount = partner_payouts.paid_amount + excluded.paid_amount,
                paid_count = partner_payouts.paid_count + 1",
    )
    .bind(payment_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A claw-back (`sign` 1) or its cancellation (-1): the payment's status, and the partner's
/// totals clawed back.
async fn clawed_back(
    tx: &mut PgConnection,
    clawback: &Clawback,
    sign: i64,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "update payments
            set status = case when $2 > 0 then 'clawed_back' else 'completed' end,
                clawback_id = case when $2 > 0 then $3 end, reason = $4, updated_at = $5
          where payment_id = $1",
    )
    .bind(clawback.payment_id)
    .bind(sign)
    .bind(clawback.clawback_id)
    .bind(&clawback.reason)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update partner_payouts
            set clawed_back_amount = clawed_back_amount + $3 * $4,
                clawed_back_count = clawed_back_count + $4
          where partner_id = $1 and currency = $2",
    )
    .bind(clawback.partner_id)
    .bind(&clawback.amount.currency)
    .bind(clawback.amount.amount)
    .bind(sign)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Projection for PaymentViews {
    fn name(&self) -> &'static str {
        "payment-views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["payments", "partner_payouts"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), Error> {
        let Ok(Some(stored)) = wire::stored(event) else {
            return Ok(());
        };
        let at = event.recorded_at;
        match &stored {
            PaymentEvent::Requested(r) => requested(tx, r, at).await,
            PaymentEvent::PayoutAttempted { payment_id, .. } => {
                moved(tx, *payment_id, "attempted", (None, None), at).await
            }
            PaymentEvent::PayoutOutcomeUnknown { payment_id, reason } => {
                moved(tx, *payment_id, "unknown", (None, Some(reason)), at).await
            }
            PaymentEvent::Completed {
                payment_id,
                provider_reference,
            } => completed(tx, *payment_id, provider_reference, at).await,
            PaymentEvent::Failed { payment_id, reason } => {
                moved(tx, *payment_id, "failed", (None, Some(reason)), at).await
            }
            // Cancelled before it was requested: there is no payment to list.
            PaymentEvent::Cancelled { .. } => Ok(()),
            PaymentEvent::ClawedBack(c) => clawed_back(tx, c, 1, at).await,
            PaymentEvent::ClawBackCancelled(c) => clawed_back(tx, c, -1, at).await,
        }
    }
}
