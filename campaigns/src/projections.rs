//! The campaigns read models: partners, campaigns with their reserved and available budget, each
//! campaign's partners and content, and budget reservations held or released. One projection
//! feeds them all from the service's global log, and can rebuild them from zero.

use crate::domain::{
    CampaignDetails, CampaignEvent, CommissionRule, Content, ContentKind, Money, PartnerEvent,
    PartnerRegistration,
};
use crate::wire::{self, Stored};
use eventstore::projection::Projection;
use eventstore::{Error, RecordedEvent};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// The `partners`, `campaigns`, `campaign_partners`, `campaign_content` and
/// `budget_reservations` tables.
#[derive(Debug, Default)]
pub struct CampaignViews;

/// The name the read models and the query API give a content kind.
pub fn content_kind_name(kind: ContentKind) -> &'static str {
    match kind {
        ContentKind::Banner => "banner",
        ContentKind::Link => "link",
        ContentKind::Text => "text",
        ContentKind::Video => "video",
    }
}

async fn registered(
    tx: &mut PgConnection,
    r: &PartnerRegistration,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "insert into partners (partner_id, name, email, payout_account, registered_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(r.partner_id)
    .bind(&r.name)
    .bind(&r.email)
    .bind(&r.payout_account)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn created(
    tx: &mut PgConnection,
    d: &CampaignDetails,
    event: &RecordedEvent,
) -> Result<(), Error> {
    let (kind, amount, basis_points) = match d.commission_rule {
        CommissionRule::Fixed { amount } => ("fixed", Some(amount), None),
        CommissionRule::Percent { basis_points } => ("percent", None, Some(basis_points)),
    };
    sqlx::query(
        "insert into campaigns (campaign_id, advertiser_id, name, budget, currency, commission_type,
                                commission_amount, commission_basis_points, valid_from, valid_until,
                                version, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(d.campaign_id)
    .bind(d.advertiser_id)
    .bind(&d.name)
    .bind(d.budget.amount)
    .bind(&d.budget.currency)
    .bind(kind)
    .bind(amount)
    .bind(basis_points)
    .bind(d.valid_from)
    .bind(d.valid_until)
    .bind(event.version)
    .bind(event.recorded_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves a campaign's row to the event's version, changing its reserved amount by `reserved`.
async fn touch(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    reserved: i64,
    event: &RecordedEvent,
) -> Result<(), Error> {
    sqlx::query(
        "update campaigns set reserved = reserved + $2, version = $3, updated_at = $4
          where campaign_id = $1",
    )
    .bind(campaign_id)
    .bind(reserved)
    .bind(event.version)
    .bind(event.recorded_at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn partner_associated(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    partner_id: Uuid,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "insert into campaign_partners (campaign_id, partner_id, associated_at) values ($1, $2, $3)",
    )
    .bind(campaign_id)
    .bind(partner_id)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn content_associated(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    content: &Content,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "insert into campaign_content (campaign_id, content_id, kind, url, title, tags, associated_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(campaign_id)
    .bind(content.content_id)
    .bind(content_kind_name(content.kind))
    .bind(&content.url)
    .bind(&content.title)
    .bind(&content.tags)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

/// The identity of a reservation and what it holds.
struct Held<'a> {
    campaign_id: Uuid,
    reservation_id: Uuid,
    partner_id: Uuid,
    tracking_id: Uuid,
    amount: &'a Money,
}

async fn reserved(tx: &mut PgConnection, held: Held<'_>, at: OffsetDateTime) -> Result<(), Error> {
    sqlx::query(
        "insert into budget_reservations (campaign_id, reservation_id, partner_id, tracking_id,
                                          amount, currency, status, reserved_at)
         values ($1, $2, $3, $4, $5, $6, 'held', $7)",
    )
    .bind(held.campaign_id)
    .bind(held.reservation_id)
    .bind(held.partner_id)
    .bind(held.tracking_id)
    .bind(held.amount.amount)
    .bind(&held.amount.currency)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn released(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    reservation_id: Uuid,
    reason: &str,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "update budget_reservations set status = 'released', release_reason = $3, released_at = $4
          where campaign_id = $1 and reservation_id = $2",
    )
    .bind(campaign_id)
    .bind(reservation_id)
    .bind(reason)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn campaign_changed(
    tx: &mut PgConnection,
    change: &CampaignEvent,
    event: &RecordedEvent,
) -> Result<(), Error> {
    let at = event.recorded_at;
    match change {
        CampaignEvent::Created(details) => created(tx, details, event).await,
        CampaignEvent::PartnerAssociated {
            campaign_id,
            partner_id,
        } => {
            partner_associated(tx, *campaign_id, *partner_id, at).await?;
            touch(tx, *campaign_id, 0, event).await
        }
        CampaignEvent::ContentAssociated {
            campaign_id,
            content,
        } => {
            content_associated(tx, *campaign_id, content, at).await?;
            touch(tx, *campaign_id, 0, event).await
        }
        CampaignEvent::BudgetReserved {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount,
        } => {
            let held = Held {
                campaign_id: *campaign_id,
                reservation_id: *reservation_id,
                partner_id: *partner_id,
                tracking_id: *tracking_id,
                amount,
            };
            reserved(tx, held, at).await?;
            touch(tx, *campaign_id, amount.amount, event).await
        }
        CampaignEvent::BudgetReleased {
            reservation_id,
            campaign_id,
            amount,
            reason,
        } => {
            released(tx, *campaign_id, *reservation_id, reason, at).await?;
            touch(tx, *campaign_id, -amount.amount, event).await
        }
    }
}

impl Projection for CampaignViews {
    fn name(&self) -> &'static str {
        "campaigns-views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "partners",
            "campaigns",
            "campaign_partners",
            "campaign_content",
            "budget_reservations",
        ]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), Error> {
        match wire::stored(event) {
            Ok(Some(Stored::Partner(PartnerEvent::Registered(r)))) => {
                registered(tx, &r, event.recorded_at).await
            }
            Ok(Some(Stored::Campaign(change))) => campaign_changed(tx, &change, event).await,
            // Replies are not stored; an event this build cannot decode is left to a newer one.
            Ok(None) | Err(_) => Ok(()),
        }
    }
}
