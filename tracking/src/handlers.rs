//! One handler per command topic tracking consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.

use crate::domain::{
    CampaignOrders, Error, TrackingCommand, TrackingEvent as Tracking, TrackingKind, decide_record,
    decide_refund,
};
use crate::wire::{self, Stored};
use eventstore::Aggregate;
use eventstore::ExpectedVersion;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, Replies, StreamEvents};
use schemas::commands::{ConfirmTrackingEvent, FailTrackingEvent, RecordTrackingEvent};
use schemas::events::TrackingEvent;
use sqlx::PgConnection;
use uuid::Uuid;

const REPLIES: Replies<TrackingEvent> = Replies {
    rejected: TrackingEvent::CommandRejected,
    already_applied: TrackingEvent::CommandAlreadyApplied,
};

async fn load_tracking(
    tx: &mut PgConnection,
    stream_id: &str,
) -> Result<(Tracking, ExpectedVersion), HandlerError> {
    effects::load(
        tx,
        stream_id,
        wire::stored,
        |state: &mut Tracking, stored| {
            if let Stored::Tracking(change) = stored {
                state.apply(&change);
            }
        },
    )
    .await
}

/// Another tracking event a decision reads (and does not write), if there is one.
async fn load_other(
    tx: &mut PgConnection,
    tracking_id: Option<Uuid>,
) -> Result<Tracking, HandlerError> {
    Ok(match tracking_id {
        Some(id) => load_tracking(tx, &wire::tracking_stream(id)).await?.0,
        None => Tracking::default(),
    })
}

fn refused(error: Error) -> (&'static str, String) {
    (error.code(), error.to_string())
}

/// `campaign-tracking-events`: records a click, lead or conversion; a conversion also claims its
/// order id on the campaign (the order claim's own stream), so the same order twice is refused as
/// fraud. A refund is decided against that claim and the conversion it names, and records itself
/// on the claim.
#[derive(Debug, Default)]
pub struct Record;

impl Handler for Record {
    type Message = RecordTrackingEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<RecordTrackingEvent>,
    ) -> Result<(), HandlerError> {
        let recording = wire::recording(&incoming.message);
        let tracking_stream = wire::tracking_stream(recording.tracking_id);
        let orders_stream = recording.order.as_ref().map_or_else(String::new, |order| {
            wire::order_claim_stream(recording.campaign_id, &order.order_id)
        });
        let (tracking, tracking_version) = load_tracking(tx, &tracking_stream).await?;
        let (orders, orders_version) = if recording.order.is_some() {
            effects::load(
                tx,
                &orders_stream,
                wire::stored,
                |state: &mut CampaignOrders, stored| {
                    if let Stored::Orders(event) = stored {
                        state.apply(&event);
                    }
                },
            )
            .await?
        } else {
            (CampaignOrders::default(), ExpectedVersion::Any)
        };
        let decided = match (recording.kind, &recording.order) {
            (TrackingKind::Refund, Some(order)) => {
                let conversion = load_other(tx, orders.claimed_by(&order.order_id)).await?;
                let last_refund = orders
                    .refunded_by(&order.order_id)
                    .filter(|refund| *refund != recording.tracking_id);
                let last_refund = load_other(tx, last_refund).await?;
                decide_refund(&tracking, &orders, (&conversion, &last_refund), &recording)
            }
            _ => decide_record(&tracking, &orders, &recording),
        };
        let decision = decided
            .map(|decision| {
                vec![
                    StreamEvents {
                        stream_id: &tracking_stream,
                        stream_type: "tracking-event",
                        expected: tracking_version,
                        events: decision.tracking.iter().map(wire::tracking_event).collect(),
                    },
                    StreamEvents {
                        stream_id: &orders_stream,
                        stream_type: "campaign-order",
                        expected: orders_version,
                        events: decision.orders.iter().map(wire::orders_event).collect(),
                    },
                ]
            })
            .map_err(refused);
        let key = recording.tracking_id.to_string();
        effects::commit_decision(tx, &incoming.properties, &key, decision, REPLIES).await
    }
}

/// Applies a confirm or fail command to its tracking event.
async fn transition(
    tx: &mut PgConnection,
    props: &messaging::Properties,
    tracking_id: Uuid,
    command: TrackingCommand,
) -> Result<(), HandlerError> {
    let stream_id = wire::tracking_stream(tracking_id);
    let (tracking, expected) = load_tracking(tx, &stream_id).await?;
    let decision = tracking
        .decide(&command)
        .map(|changes| {
            vec![StreamEvents {
                stream_id: &stream_id,
                stream_type: "tracking-event",
                expected,
                events: changes.iter().map(wire::tracking_event).collect(),
            }]
        })
        .map_err(refused);
    effects::commit_decision(tx, props, &tracking_id.to_string(), decision, REPLIES).await
}

/// `tracking-event-confirmation`: the tracking event's saga completed.
#[derive(Debug, Default)]
pub struct Confirm;

impl Handler for Confirm {
    type Message = ConfirmTrackingEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<ConfirmTrackingEvent>,
    ) -> Result<(), HandlerError> {
        let tracking_id = incoming.message.tracking_id;
        transition(
            tx,
            &incoming.properties,
            tracking_id,
            TrackingCommand::Confirm { tracking_id },
        )
        .await
    }
}

/// `fail-tracking-events`: compensation, the tracking event's saga failed.
#[derive(Debug, Default)]
pub struct Fail;

impl Handler for Fail {
    type Message = FailTrackingEvent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<FailTrackingEvent>,
    ) -> Result<(), HandlerError> {
        let tracking_id = incoming.message.tracking_id;
        let command = TrackingCommand::Fail {
            tracking_id,
            reason: incoming.message.reason.clone(),
        };
        transition(tx, &incoming.properties, tracking_id, command).await
    }
}
