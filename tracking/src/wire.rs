//! The only place tracking's domain meets the wire: commands from Avro into domain commands, and
//! domain events into `tracking-events` records (which are also the event store's payloads) and
//! back. Upcasting happens here, by Avro schema resolution from a stored event's schema version.

use crate::domain::{CampaignOrdersEvent, Recording, TrackingChange};
use eventstore::Aggregate;
use eventstore::RecordedEvent;
use schemas::commands::RecordTrackingEvent;
use schemas::events::{
    OrderClaimed, OrderRefunded, TrackingEvent, TrackingEventConfirmed, TrackingEventFailed,
};

/// An event of one of tracking's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Tracking(TrackingChange),
    Orders(CampaignOrdersEvent),
}

pub fn recording(command: &RecordTrackingEvent) -> Recording {
    Recording {
        tracking_id: command.tracking_id,
        campaign_id: command.campaign_id,
        partner_id: command.partner_id,
        kind: command.kind,
        order: command.order.clone(),
        occurred_at: command.occurred_at,
        refund_of: None,
    }
}

pub fn tracking_event(change: &TrackingChange) -> TrackingEvent {
    match change {
        TrackingChange::Recorded(r) => TrackingEvent::Recorded(r.clone()),
        TrackingChange::Confirmed {
            tracking_id,
            campaign_id,
            partner_id,
        } => TrackingEvent::Confirmed(TrackingEventConfirmed {
            tracking_id: *tracking_id,
            campaign_id: *campaign_id,
            partner_id: *partner_id,
        }),
        TrackingChange::Failed {
            tracking_id,
            campaign_id,
            partner_id,
            reason,
        } => TrackingEvent::Failed(TrackingEventFailed {
            tracking_id: *tracking_id,
            campaign_id: *campaign_id,
            partner_id: *partner_id,
            reason: reason.clone(),
        }),
    }
}

pub fn orders_event(event: &CampaignOrdersEvent) -> TrackingEvent {
    match event {
        CampaignOrdersEvent::OrderClaimed {
            campaign_id,
            order_id,
            tracking_id,
        } => TrackingEvent::OrderClaimed(OrderClaimed {
            campaign_id: *campaign_id,
            order_id: order_id.clone(),
            tracking_id: *tracking_id,
        }),
        CampaignOrdersEvent::OrderRefunded {
            campaign_id,
            order_id,
            tracking_id,
        } => TrackingEvent::OrderRefunded(OrderRefunded {
            campaign_id: *campaign_id,
            order_id: order_id.clone(),
            tracking_id: *tracking_id,
        }),
    }
}

/// A stored event as a domain event; replies (rejections) are never stored.
pub fn stored(event: &RecordedEvent) -> Result<Option<Stored>, schemas::Error> {
    Ok(match messaging::stored::decode::<TrackingEvent>(event)? {
        TrackingEvent::Recorded(r) => Some(Stored::Tracking(TrackingChange::Recorded(r))),
        TrackingEvent::Confirmed(c) => Some(Stored::Tracking(TrackingChange::Confirmed {
            tracking_id: c.tracking_id,
            campaign_id: c.campaign_id,
            partner_id: c.partner_id,
        })),
        TrackingEvent::Failed(f) => Some(Stored::Tracking(TrackingChange::Failed {
            tracking_id: f.tracking_id,
            campaign_id: f.campaign_id,
            partner_id: f.partner_id,
            reason: f.reason,
        })),
        TrackingEvent::OrderClaimed(o) => Some(Stored::Orders(CampaignOrdersEvent::OrderClaimed {
            campaign_id: o.campaign_id,
            order_id: o.order_id,
            tracking_id: o.tracking_id,
        })),
        TrackingEvent::OrderRefunded(o) => {
            Some(Stored::Orders(CampaignOrdersEvent::OrderRefunded {
                campaign_id: o.campaign_id,
                order_id: o.order_id,
                tracking_id: o.tracking_id,
            }))
        }
        TrackingEvent::CommandRejected(_) | TrackingEvent::CommandAlreadyApplied(_) => None,
    })
}

/// A tracking event's or an order claim's state, folded from its stream's events.
pub fn fold(events: &[RecordedEvent]) -> Option<serde_json::Value> {
    use crate::domain::{CampaignOrders, TrackingEvent as Tracking};
    use eventstore::api::fold_state;
    let tracking = |event: &RecordedEvent| match stored(event).ok()?? {
        Stored::Tracking(change) => Some(change),
        Stored::Orders(_) => None,
    };
    let orders = |event: &RecordedEvent| match stored(event).ok()?? {
        Stored::Orders(event) => Some(event),
        Stored::Tracking(_) => None,
    };
    match stored(events.first()?).ok()?? {
        Stored::Tracking(_) => fold_state(events, tracking, Tracking::apply),
        Stored::Orders(_) => fold_state(events, orders, CampaignOrders::apply),
    }
}

/// The stream of one tracking event.
pub fn tracking_stream(tracking_id: uuid::Uuid) -> String {
    format!("tracking-event-{tracking_id}")
}

/// The stream of one order id's claim on a campaign, named by a UUID derived from both (an order
/// id is any text a client sends). Conversions of one campaign with different order ids never
/// contend; two conversions claiming the same order id race for this one stream.
pub fn order_claim_stream(campaign_id: uuid::Uuid, order_id: &str) -> String {
    format!(
        "campaign-order-{}",
        uuid::Uuid::new_v5(&campaign_id, order_id.as_bytes())
    )
}
