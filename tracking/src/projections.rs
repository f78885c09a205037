//! Tracking's read models: each tracking event with its state, and per-campaign counts. Both are
//! fed from the service's global log by one projection and can be rebuilt from zero.

use crate::domain::{Recording, TrackingChange, TrackingKind};
use crate::wire::{self, Stored};
use eventstore::projection::Projection;
use eventstore::{Error, RecordedEvent};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;
use uuid::Uuid;

/// The `tracking_events` and `campaign_tracking_stats` tables.
#[derive(Debug, Default)]
pub struct TrackingViews;

fn kind_name(kind: TrackingKind) -> &'static str {
    match kind {
        TrackingKind::Click => "click",
        TrackingKind::Lead => "lead",
        TrackingKind::Conversion => "conversion",
        TrackingKind::Refund => "refund",
    }
}

fn micros(at: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A page of tracking changes folded in memory: new rows, each event's last settlement, and how
/// much each campaign's counts move. Written in three statements whatever the page's length.
#[derive(Default)]
struct Folded {
    recorded: Vec<(Recording, OffsetDateTime)>,
    /// Tracking id → index in `settlements`; a later settlement replaces an earlier one.
    settled: HashMap<Uuid, usize>,
    settlements: Vec<(Uuid, Option<String>, OffsetDateTime)>,
    /// Per campaign: clicks, leads, conversions, confirmed, failed, refunds.
    counts: BTreeMap<Uuid, [i64; 6]>,
}

impl Folded {
    fn add(&mut self, change: TrackingChange, at: OffsetDateTime) {
        let (campaign_id, count) = match change {
            TrackingChange::Recorded(r) => {
                let count = match r.kind {
                    TrackingKind::Click => 0,
                    TrackingKind::Lead => 1,
                    TrackingKind::Conversion => 2,
                    TrackingKind::Refund => 5,
                };
                let campaign_id = r.campaign_id;
                self.recorded.push((r, at));
                (campaign_id, count)
            }
            TrackingChange::Confirmed {
                tracking_id,
                campaign_id,
                ..
            } => {
                self.settle(tracking_id, None, at);
                (campaign_id, 3)
            }
            TrackingChange::Failed {
                tracking_id,
                campaign_id,
                reason,
                ..
            } => {
                self.settle(tracking_id, Some(reason), at);
                (campaign_id, 4)
            }
        };
        self.counts.entry(campaign_id).or_default()[count] += 1;
    }

    fn settle(&mut self, tracking_id: Uuid, failure: Option<String>, at: OffsetDateTime) {
        let settlement = (tracking_id, failure, at);
        match self.settled.get(&tracking_id) {
            Some(&i) => self.settlements[i] = settlement,
            None => {
                self.settled.insert(tracking_id, self.settlements.len());
                self.settlements.push(settlement);
            }
        }
    }

    async fn write(&self, tx: &mut PgConnection) -> Result<(), Error> {
        if !self.recorded.is_empty() {
            insert_recorded(tx, &self.recorded).await?;
        }
        if !self.settlements.is_empty() {
            let settled = &self.settlements;
            sqlx::query(
                "update tracking_events e
                 set status = case when s.failure is null then 'confirmed' else 'failed' end,
                     failure_reason = s.failure, updated_at = s.at
                 from unnest($1::uuid[], $2::text[], $3::timestamptz[]) as s(id, failure, at)
                 where e.tracking_id = s.id",
            )
            .bind(settled.iter().map(|s| s.0).collect::<Vec<_>>())
            .bind(settled.iter().map(|s| s.1.as_deref()).collect::<Vec<_>>())
            .bind(settled.iter().map(|s| s.2).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !self.counts.is_empty() {
            let campaigns: Vec<Uuid> = self.counts.keys().copied().collect();
            let column = |n: usize| self.counts.values().map(|c| c[n]).collect::<Vec<i64>>();
            sqlx::query(
                "insert into campaign_tracking_stats as s
                   (campaign_id, clicks, leads, conversions, confirmed, failed, refunds)
                 select * from unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[],
                                      $5::bigint[], $6::bigint[], $7::bigint[])
                 on conflict (campaign_id) do update set
                   clicks = s.clicks + excluded.clicks,
                   leads = s.leads + excluded.leads,
                   conversions = s.conversions + excluded.conversions,
                   confirmed = s.confirmed + excluded.confirmed,
                   failed = s.failed + excluded.failed,
                   refunds = s.refunds + excluded.refunds",
            )
            .bind(campaigns)
            .bind(column(0))
            .bind(column(1))
            .bind(column(2))
            .bind(column(3))
            .bind(column(4))
            .bind(column(5))
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

async fn insert_recorded(
    tx: &mut PgConnection,
    recorded: &[(Recording, OffsetDateTime)],
) -> Result<(), Error> {
    let rows = || recorded.iter().map(|(r, _)| r);
    let orders = || rows().map(|r| r.order.as_ref());
    sqlx::query(
        "insert into tracking_events (tracking_id, campaign_id, partner_id, kind, order_id,
                                      order_amount, currency, occurred_at, status, recorded_at,
                                      updated_at, refund_of)
         select id, campaign, partner, kind, order_id, amount, currency, occurred, 'recorded', at, at,
                refund_of
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bigint[],
                     $7::text[], $8::timestamptz[], $9::timestamptz[], $10::uuid[])
              as t(id, campaign, partner, kind, order_id, amount, currency, occurred, at, refund_of)",
    )
    .bind(rows().map(|r| r.tracking_id).collect::<Vec<_>>())
    .bind(rows().map(|r| r.campaign_id).collect::<Vec<_>>())
    .bind(rows().map(|r| r.partner_id).collect::<Vec<_>>())
    .bind(rows().map(|r| kind_name(r.kind)).collect::<Vec<_>>())
    .bind(orders().map(|o| o.map(|o| o.order_id.as_str())).collect::<Vec<_>>())
    .bind(orders().map(|o| o.map(|o| o.amount.amount)).collect::<Vec<_>>())
    .bind(orders().map(|o| o.map(|o| o.amount.currency.as_str())).collect::<Vec<_>>())
    .bind(rows().map(|r| micros(r.occurred_at)).collect::<Vec<_>>())
    .bind(recorded.iter().map(|(_, at)| *at).collect::<Vec<_>>())
    .bind(rows().map(|r| r.refund_of).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Projection for TrackingViews {
    fn name(&self) -> &'static str {
        "tracking-views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tracking_events", "campaign_tracking_stats"]
    }

    async fn apply_page(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        let mut folded = Folded::default();
        for event in events {
            if let Ok(Some(Stored::Tracking(change))) = wire::stored(event) {
                folded.add(change, event.recorded_at);
            }
        }
        folded.write(tx).await
    }
}
