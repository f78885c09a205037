//! Commissions' read models: each commission with its status, each partner's totals assigned and
//! reversed per currency, and each campaign's. All are fed from the service's global log by one
//! projection and can be rebuilt from zero. What was paid is not here: payments owns it, and the
//! BFF subtracts it from a partner's totals.

use crate::domain::{Assignment, CommissionEvent, Money};
use crate::wire;
use eventstore::projection::Projection;
use eventstore::{Error, RecordedEvent};
use sqlx::PgConnection;
use uuid::Uuid;

/// The `commissions`, `partner_balances` and `campaign_commission_stats` tables.
#[derive(Debug, Default)]
pub struct CommissionViews;

/// Which totals a commission counts in.
#[derive(Debug, Clone, Copy)]
enum Side {
    Assigned,
    Reversed,
}

impl Side {
    /// The amount and count columns of both totals tables.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Side::Assigned => ("assigned", "assigned_count"),
            Side::Reversed => ("reversed", "reversed_count"),
        }
    }
}

async fn assigned(
    tx: &mut PgConnection,
    a: &Assignment,
    event: &RecordedEvent,
) -> Result<(), Error> {
    sqlx::query(
        "insert into commissions (commission_id, campaign_id, partner_id, tracking_id, amount, currency,
                                  status, assigned_at, updated_at, position)
         values ($1, $2, $3, $4, $5, $6, 'assigned', $7, $7, $8)",
    )
    .bind(a.commission_id)
    .bind(a.campaign_id)
    .bind(a.partner_id)
    .bind(a.tracking_id)
    .bind(a.amount.amount)
    .bind(&a.amount.currency)
    .bind(event.recorded_at)
    .bind(event.position)
    .execute(&mut *tx)
    .await?;
    add(
        tx,
        a.partner_id,
        a.campaign_id,
        &a.amount,
        (Side::Assigned, 1),
    )
    .await
}

/// A commission reversed (`sign` 1) or reinstated (-1): its row's status, and its partner's and
/// campaign's totals reversed.
async fn reversed(
    tx: &mut PgConnection,
    event: &RecordedEvent,
    (commission_id, partner_id, campaign_id): (Uuid, Uuid, Uuid),
    (amount, reason): (&Money, &str),
    sign: i64,
) -> Result<(), Error> {
    sqlx::query(
        "update commissions
            set status = case when $2 > 0 then 'reversed' else 'assigned' end, reason = $3,
                reversed_at = case when $2 > 0 then $4 end, updated_at = $4
          where commission_id = $1",
    )
    .bind(commission_id)
    .bind(sign)
    .bind(reason)
    .bind(event.recorded_at)
    .execute(&mut *tx)
    .await?;
    add(tx, partner_id, campaign_id, amount, (Side::Reversed, sign)).await
}

async fn voided(
    tx: &mut PgConnection,
    commission_id: Uuid,
    reason: &str,
    event: &RecordedEvent,
) -> Result<(), Error> {
    sqlx::query(
        "insert into commissions (commission_id, status, reason, reversed_at, updated_at, position)
         values ($1, 'voided', $2, $3, $3, $4)",
    )
    .bind(commission_id)
    .bind(reason)
    .bind(event.recorded_at)
    .bind(event.position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Adds one commission of `amount` to one side of its partner's and its campaign's totals, or
/// (`sign` -1) takes one away.
async fn add(
    tx: &mut PgConnection,
    partner_id: Uuid,
    campaign_id: Uuid,
    amount: &Money,
    (side, sign): (Side, i64),
) -> Result<(), Error> {
    let (sum, count) = side.columns();
    let sql = format!(
        "with partner as (
             insert into partner_balances (partner_id, currency, {sum}, {count})
             values ($1, $3, $4 * $5, $5)
             on conflict (partner_id, currency) do update
                set {sum} = partner_balances.{sum} + excluded.{sum},
                    {count} = partner_balances.{count} + excluded.{count}
         )
         insert into campaign_commission_stats (campaign_id, currency, {sum}, {count})
         values ($2, $3, $4 * $5, $5)
         on conflict (campaign_id, currency) do update
            set {sum} = campaign_commission_stats.{sum} + excluded.{sum},
                {count} = campaign_commission_stats.{count} + excluded.{count}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(partner_id)
        .bind(campaign_id)
        .bind(&amount.currency)
        .bind(amount.amount)
        .bind(sign)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Projection for CommissionViews {
    fn name(&self) -> &'static str {
        "commission-views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "commissions",
            "partner_balances",
            "campaign_commission_stats",
        ]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), Error> {
        let Ok(Some(change)) = wire::stored(event) else {
            return Ok(());
        };
        match &change {
            CommissionEvent::Assigned(a) => assigned(tx, a, event).await,
            CommissionEvent::Reversed {
                commission_id,
                campaign_id,
                partner_id,
                amount,
                reason,
            }
            | CommissionEvent::Reinstated {
                commission_id,
                campaign_id,
                partner_id,
                amount,
                reason,
            } => {
                let sign = match change {
                    CommissionEvent::Reinstated { .. } => -1,
                    _ => 1,
                };
                let ids = (*commission_id, *partner_id, *campaign_id);
                reversed(tx, event, ids, (amount, reason), sign).await
            }
            CommissionEvent::Voided {
                commission_id,
                reason,
            } => voided(tx, *commission_id, reason, event).await,
        }
    }
}
