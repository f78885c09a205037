//! How a decision gets its campaign. A campaign's stream only grows (two events per saga it pays
//! for), so three things keep a decision from folding it whole:
//! - the state as last folded stays in memory between commands ([`CampaignCache`]), and only the
//!   events after its version are read;
//! - every [`SNAPSHOT_EVERY`] events the state is kept as the stream's snapshot
//!   (`eventstore::snapshot`), so a process that has not seen the campaign reads one row and at
//!   most that many events;
//! - reservations, which grow with the orders, are in neither: each is in `reservation_index`,
//!   written in the transaction that appends its event, and a decision on a reservation looks
//!   that one up.
//!
//! A campaign folded from its start (no snapshot yet, or one recorded before snapshots existed)
//! knows every reservation; they go into the index then, so the index is complete by the time a
//! snapshot leaves them out.

use crate::domain::{Campaign, CampaignEvent, Reservation};
use crate::wire::{self, Stored};
use eventstore::Aggregate;
use messaging::consume::HandlerError;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// The snapshot's encoding: the domain's `Campaign` as JSON, reservations left out.
pub const SNAPSHOT_KIND: &str = "campaign/1";

/// A snapshot is kept each time a campaign's stream passes a multiple of this many events.
pub const SNAPSHOT_EVERY: i64 = 1_000;

/// Campaigns as last folded, with the version each was folded to, shared by every handler that
/// decides on a campaign. A stream's events never change once committed, so a kept state stays
/// true up to its version whatever happened since; the append's expected version still decides
/// any race. A handler takes the state out while it decides and puts it back, so concurrent
/// commands on one campaign never share one; the one without it loads it again.
#[derive(Debug, Default)]
pub struct CampaignCache(Mutex<HashMap<Uuid, (Campaign, i64)>>);

impl CampaignCache {
    /// Campaigns kept at most; past it, an arbitrary one is forgotten for each new one.
    const CAPACITY: usize = 4096;

    fn take(&self, campaign_id: Uuid) -> Option<(Campaign, i64)> {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.remove(&campaign_id)
    }

    fn put(&self, campaign_id: Uuid, campaign: Campaign, version: i64) {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.len() >= Self::CAPACITY
            && let Some(other) = kept.keys().next().copied()
        {
            kept.remove(&other);
        }
        match kept.get(&campaign_id) {
            Some((_, newer)) if *newer >= version => {}
            _ => {
                kept.insert(campaign_id, (campaign, version));
            }
        }
    }
}

/// A campaign loaded for a decision.
#[derive(Debug)]
pub struct Loaded {
    pub campaign: Campaign,
    /// The stream's version the campaign is folded to (0: no stream).
    pub version: i64,
    /// Folded from the stream's start: it knows every reservation.
    from_start: bool,
}

/// The campaign as its stream stands, with the reservation `reservation_id` (if any) known.
pub async fn load(
    tx: &mut PgConnection,
    cache: &CampaignCache,
    campaign_id: Uuid,
    reservation_id: Option<Uuid>,
) -> Result<Loaded, HandlerError> {
    let stream_id = wire::campaign_stream(campaign_id);
    let kept = match cache.take(campaign_id) {
        Some(kept) => kept,
        None => from_snapshot(tx, &stream_id).await?,
    };
    let from_start = kept.1 == 0;
    let (mut campaign, version) = messaging::effects::fold(
        tx,
        &stream_id,
        kept,
        wire::stored,
        |state: &mut Campaign, stored| {
            if let Stored::Campaign(event) = stored {
                state.apply(&event);
            }
        },
    )
    .await?;
    if from_start {
        index(tx, campaign_id, campaign.reservations()).await?;
    }
    if let Some(reservation_id) = reservation_id
        && let Some(reservation) = indexed(tx, campaign_id, reservation_id).await?
    {
        campaign.know_reservation(reservation_id, reservation);
    }
    Ok(Loaded {
        campaign,
        version,
        from_start,
    })
}

/// After a decision: the reservations its events record go into the index, and a snapshot is
/// kept when they take the stream past a multiple of [`SNAPSHOT_EVERY`] (or when a campaign
/// folded from its start is past one); the state goes back to the cache, reservations forgotten.
pub async fn decided(
    tx: &mut PgConnection,
    cache: &CampaignCache,
    campaign_id: Uuid,
    loaded: Loaded,
    events: &[CampaignEvent],
) -> Result<(), HandlerError> {
    let Loaded {
        mut campaign,
        version,
        from_start,
    } = loaded;
    let at = version + events.len() as i64;
    let crossed = at / SNAPSHOT_EVERY > version / SNAPSHOT_EVERY;
    if !events.is_empty() || (from_start && at >= SNAPSHOT_EVERY) {
        let mut next = campaign.clone();
        for event in events {
            next.apply(event);
        }
        let recorded: Vec<Uuid> = events.iter().filter_map(reservation_of).collect();
        let reservations = next.reservations().filter(|(id, _)| recorded.contains(id));
        index(tx, campaign_id, reservations).await?;
        if crossed || (from_start && at >= SNAPSHOT_EVERY) {
            let state = serde_json::to_vec(&next)
                .map_err(|e| HandlerError::Transient(format!("encoding a snapshot: {e}")))?;
            let stream_id = wire::campaign_stream(campaign_id);
            eventstore::snapshot::store(tx, &stream_id, SNAPSHOT_KIND, at, &state).await?;
        }
    }
    campaign.forget_reservations();
    cache.put(campaign_id, campaign, version);
    Ok(())
}

fn reservation_of(event: &CampaignEvent) -> Option<Uuid> {
    match event {
        CampaignEvent::BudgetReserved { reservation_id, .. }
        | CampaignEvent::BudgetReleased { reservation_id, .. } => Some(*reservation_id),
        _ => None,
    }
}

/// The stream's snapshot, or nothing folded yet (version 0) when it has none of this kind or
/// one this build cannot read.
async fn from_snapshot(
    tx: &mut PgConnection,
    stream_id: &str,
) -> Result<(Campaign, i64), HandlerError> {
    let Some(snapshot) = eventstore::snapshot::load(tx, stream_id, SNAPSHOT_KIND).await? else {
        return Ok((Campaign::default(), 0));
    };
    match serde_json::from_slice(&snapshot.state) {
        Ok(campaign) => Ok((campaign, snapshot.version)),
        Err(error) => {
            tracing::warn!(stream_id, %error, "unreadable snapshot; folding from the start");
            Ok((Campaign::default(), 0))
        }
    }
}

/// Writes `reservations` to the index, as they now stand.
async fn index<'a>(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    reservations: impl Iterator<Item = (&'a Uuid, &'a Reservation)>,
) -> Result<(), HandlerError> {
    let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (id, reservation) in reservations {
        columns.0.push(*id);
        columns.1.push(reservation.partner_id);
        columns.2.push(reservation.tracking_id);
        columns.3.push(reservation.amount.amount);
        columns.4.push(reservation.amount.currency.clone());
        columns.5.push(reservation.released);
    }
    if columns.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into reservation_index
              (campaign_id, reservation_id, partner_id, tracking_id, amount, currency, released)
         select $1, * from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[],
                                  $7::boolean[])
         on conflict (campaign_id, reservation_id) do update set released = excluded.released",
    )
    .bind(campaign_id)
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .bind(&columns.3)
    .bind(&columns.4)
    .bind(&columns.5)
    .execute(tx)
    .await?;
    Ok(())
}

/// One reservation from the index.
async fn indexed(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    reservation_id: Uuid,
) -> Result<Option<Reservation>, HandlerError> {
    let row: Option<(Uuid, Uuid, i64, String, bool)> = sqlx::query_as(
        "select partner_id, tracking_id, amount, currency, released from reservation_index
          where campaign_id = $1 and reservation_id = $2",
    )
    .bind(campaign_id)
    .bind(reservation_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(
        |(partner_id, tracking_id, amount, currency, released)| Reservation {
            partner_id,
            tracking_id,
            amount: crate::domain::Money::new(amount, currency),
            released,
        },
    ))
}
