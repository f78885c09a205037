//! One handler per command topic tracking consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.

use crate::domain::{
    CampaignOrders, Error, TrackingCommand, TrackingEvent as Tracking, decide_record,
};
use crate::wire::{self, Stored};
use eventstore::ExpectedVersion;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, StreamEvents};
use schemas::commands::{ConfirmTrackingEvent, FailTrackingEvent, RecordTrackingEvent};
use schemas::events::TrackingEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// A stream's state and version, folded from its events.
async fn load<S: Default>(
    tx: &mut PgConnection,
    stream_id: &str,
    mut apply: impl FnMut(&mut S, Stored),
) -> Result<(S, ExpectedVersion), HandlerError> {
    let events = eventstore::read_stream(tx, stream_id, 1, None).await?;
    let mut state = S::default();
    for event in &events {
        let stored = wire::stored(event).map_err(|e| {
            HandlerError::Transient(format!("stored event {} undecodable: {e}", event.event_id))
        })?;
        if let Some(stored) = stored {
            apply(&mut state, stored);
        }
    }
    let version = events.last().map_or(ExpectedVersion::NoStream, |e| {
        ExpectedVersion::Exact(e.version)
    });
    Ok((state, version))
}

async fn load_tracking(
    tx: &mut PgConnection,
    tracking_id: Uuid,
) -> Result<(Tracking, ExpectedVersion), HandlerError> {
    load(
        tx,
        &wire::tracking_stream(tracking_id),
        |state: &mut Tracking, stored| {
            if let Stored::Tracking(change) = stored {
                state.apply(&change);
            }
        },
    )
    .await
}

async fn reject(
    tx: &mut PgConnection,
    incoming_props: &messaging::Properties,
    aggregate: &str,
    error: &Error,
) -> Result<(), HandlerError> {
    effects::commit_rejection(
        tx,
        incoming_props,
        aggregate,
        (error.code(), &error.to_string()),
        TrackingEvent::CommandRejected,
    )
    .await
}

/// `campaign-tracking-events`: records a click, lead or conversion; a conversion also claims its
/// order id on the campaign (the order claim's own stream), so the same order twice is refused as
/// fraud.
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
        let (tracking, tracking_version) = load_tracking(tx, recording.tracking_id).await?;
        let (orders, orders_version) = if recording.order.is_some() {
            load(tx, &orders_stream, |state: &mut CampaignOrders, stored| {
                if let Stored::Orders(event) = stored {
                    state.apply(&event);
                }
            })
            .await?
        } else {
            (CampaignOrders::default(), ExpectedVersion::Any)
        };
        let key = recording.tracking_id.to_string();
        match decide_record(&tracking, &orders, &recording) {
            Err(error) => reject(tx, &incoming.properties, &key, &error).await,
            Ok(decision) if decision.tracking.is_empty() && decision.orders.is_empty() => {
                effects::commit_already_applied(
                    tx,
                    &incoming.properties,
                    &key,
                    TrackingEvent::CommandAlreadyApplied,
                )
                .await
            }
            Ok(decision) => {
                let streams = [
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
                ];
                effects::commit_events(tx, &incoming.properties, &key, &streams).await
            }
        }
    }
}

/// Applies a confirm or fail command to its tracking event.
async fn transition(
    tx: &mut PgConnection,
    props: &messaging::Properties,
    tracking_id: Uuid,
    command: TrackingCommand,
) -> Result<(), HandlerError> {
    let (tracking, version) = load_tracking(tx, tracking_id).await?;
    let key = tracking_id.to_string();
    match tracking.decide(&command) {
        Err(error) => reject(tx, props, &key, &error).await,
        Ok(changes) if changes.is_empty() => {
            effects::commit_already_applied(tx, props, &key, TrackingEvent::CommandAlreadyApplied)
                .await
        }
        Ok(changes) => {
            let stream_id = wire::tracking_stream(tracking_id);
            let streams = [StreamEvents {
                stream_id: &stream_id,
                stream_type: "tracking-event",
                expected: version,
                events: changes.iter().map(wire::tracking_event).collect(),
            }];
            effects::commit_events(tx, props, &key, &streams).await
        }
    }
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
