//! One handler per command topic commissions consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.

use crate::domain::{Commission, CommissionCommand};
use crate::wire;
use eventstore::ExpectedVersion;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, StreamEvents};
use schemas::commands::{AssignCommission, ReverseCommission};
use schemas::events::CommissionsEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// A commission's state and its stream's version, folded from its events.
async fn load(
    tx: &mut PgConnection,
    commission_id: Uuid,
) -> Result<(Commission, ExpectedVersion), HandlerError> {
    let events =
        eventstore::read_stream(tx, &wire::commission_stream(commission_id), 1, None).await?;
    let mut commission = Commission::default();
    for event in &events {
        let stored = wire::stored(event).map_err(|e| {
            HandlerError::Transient(format!("stored event {} undecodable: {e}", event.event_id))
        })?;
        if let Some(stored) = stored {
            commission.apply(&stored);
        }
    }
    let version = events.last().map_or(ExpectedVersion::NoStream, |e| {
        ExpectedVersion::Exact(e.version)
    });
    Ok((commission, version))
}

/// Decides `command` on its commission and commits what that decided: the events, a rejection,
/// or, when nothing changed, that the command was already applied.
async fn decide(
    tx: &mut PgConnection,
    props: &messaging::Properties,
    commission_id: Uuid,
    command: CommissionCommand,
) -> Result<(), HandlerError> {
    let (commission, version) = load(tx, commission_id).await?;
    let key = commission_id.to_string();
    match commission.decide(&command) {
        Err(error) => {
            effects::commit_rejection(
                tx,
                props,
                &key,
                (error.code(), &error.to_string()),
                CommissionsEvent::CommandRejected,
            )
            .await
        }
        Ok(events) if events.is_empty() => {
            effects::commit_already_applied(
                tx,
                props,
                &key,
                CommissionsEvent::CommandAlreadyApplied,
            )
            .await
        }
        Ok(events) => {
            let stream_id = wire::commission_stream(commission_id);
            let streams = [StreamEvents {
                stream_id: &stream_id,
                stream_type: "commission",
                expected: version,
                events: events.iter().map(wire::event).collect(),
            }];
            effects::commit_events(tx, props, &key, &streams).await
        }
    }
}

/// `assign-commission-to-partner`: a saga's step, the commission one tracking event earned.
#[derive(Debug, Default)]
pub struct Assign;

impl Handler for Assign {
    type Message = AssignCommission;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<AssignCommission>,
    ) -> Result<(), HandlerError> {
        let command = wire::assign(&incoming.message);
        decide(
            tx,
            &incoming.properties,
            incoming.message.commission_id,
            command,
        )
        .await
    }
}

/// `commission-reversal`: compensation, the commission's saga failed after assigning it (or gave
/// up waiting for the assignment, which this may then overtake).
#[derive(Debug, Default)]
pub struct Reverse;

impl Handler for Reverse {
    type Message = ReverseCommission;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<ReverseCommission>,
    ) -> Result<(), HandlerError> {
        let command = wire::reverse(&incoming.message);
        decide(
            tx,
            &incoming.properties,
            incoming.message.commission_id,
            command,
        )
        .await
    }
}
