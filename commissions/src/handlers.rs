//! One handler per command topic commissions consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.

use crate::domain::{Commission, CommissionCommand};
use crate::wire;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, Replies, StreamEvents};
use schemas::commands::{AssignCommission, ReverseCommission};
use schemas::events::CommissionsEvent;
use sqlx::PgConnection;
use uuid::Uuid;

const REPLIES: Replies<CommissionsEvent> = Replies {
    rejected: CommissionsEvent::CommandRejected,
    already_applied: CommissionsEvent::CommandAlreadyApplied,
};

/// Decides `command` on its commission and commits what that decided: the events, a rejection,
/// or, when nothing changed, that the command was already applied.
async fn decide(
    tx: &mut PgConnection,
    props: &messaging::Properties,
    commission_id: Uuid,
    command: CommissionCommand,
) -> Result<(), HandlerError> {
    let stream_id = wire::commission_stream(commission_id);
    let (commission, expected) =
        effects::load(tx, &stream_id, wire::stored, |c: &mut Commission, e| {
            c.apply(&e)
        })
        .await?;
    let decision = commission
        .decide(&command)
        .map(|events| {
            vec![StreamEvents {
                stream_id: &stream_id,
                stream_type: "commission",
                expected,
                events: events.iter().map(wire::event).collect(),
            }]
        })
        .map_err(|error| (error.code(), error.to_string()));
    effects::commit_decision(tx, props, &commission_id.to_string(), decision, REPLIES).await
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
