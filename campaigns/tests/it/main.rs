//! The campaigns service end to end: commands published to the real broker (Apache Pulsar,
//! a namespace of their own), handled against the real PostgreSQL, and read back over its HTTP query API; and
//! the budget's guarantee under truly concurrent reservations.

mod budget;
mod flows;
mod queries;

use schemas::commands::{AssociatePartner, CreateCampaign, RegisterPartner, ReserveBudget};
use schemas::values::{CommissionRule, Money, TrackingKind};
use sqlx::PgPool;
use uuid::Uuid;

/// The campaigns service running on its own namespace and database, with its API on a free port.
type Service = messaging::testing::ServiceUnderTest;

async fn start(db: PgPool) -> Service {
    Service::connect(db, "advertiser-1", campaigns::service()).await
}

/// A fresh, migrated campaigns database.
async fn database(db: PgPool, connections: u32) -> PgPool {
    messaging::testing::migrated(db, connections, &campaigns::service()).await
}

fn micros_now() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

const HOUR: i64 = 3_600_000_000;

fn registration() -> RegisterPartner {
    RegisterPartner {
        partner_id: Uuid::new_v4(),
        name: "Ada's Deals".into(),
        email: "ada@example.com".into(),
        payout_account: "DE89370400440532013000".into(),
    }
}

/// A campaign active from an hour ago for thirty days, paying a fixed `commission` per event.
fn campaign(advertiser_id: Uuid, budget: i64, commission: i64) -> CreateCampaign {
    let now = micros_now();
    CreateCampaign {
        campaign_id: Uuid::new_v4(),
        advertiser_id,
        name: "Spring sale".into(),
        budget: Money {
            amount: budget,
            currency: "EUR".into(),
        },
        commission_rule: CommissionRule::Fixed { amount: commission },
        valid_from: now - HOUR,
        valid_until: now + 30 * 24 * HOUR,
    }
}

fn association(campaign_id: Uuid, partner_id: Uuid) -> AssociatePartner {
    AssociatePartner {
        campaign_id,
        partner_id,
    }
}

/// A click's reservation, as the commission-assignment saga sends it.
fn reservation(campaign_id: Uuid, partner_id: Uuid) -> ReserveBudget {
    ReserveBudget {
        reservation_id: Uuid::new_v4(),
        campaign_id,
        partner_id,
        tracking_id: Uuid::new_v4(),
        kind: TrackingKind::Click,
        order_amount: None,
        occurred_at: micros_now(),
    }
}
