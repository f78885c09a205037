//! One handler per command topic commissions consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.

use crate::domain::{Commission, CommissionCommand};
use crate::wire;
use eventstore::Aggregate;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, Replies, StreamEvents};
use schemas::Message;
use schemas::commands::{AssignCommission, ReinstateCommission, ReverseCommission};
use schemas::events::CommissionsEvent;
use serde::Serialize;
use sqlx::PgConnection;
use std::marker::PhantomData;
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

/// A command of one of commissions' topics: the commission it is about, as a domain command.
pub trait CommissionMessage: Message + Serialize + Send + Sync + 'static {
    fn commission_id(&self) -> Uuid;
    fn command(&self) -> CommissionCommand;
}

/// `assign-commission-to-partner`: a saga's step, the commission one tracking event earned.
impl CommissionMessage for AssignCommission {
    fn commission_id(&self) -> Uuid {
        self.commission_id
    }

    fn command(&self) -> CommissionCommand {
        wire::assign(self)
    }
}

/// `commission-reversal`: compensation, the commission's saga failed after assigning it (or gave
/// up waiting for the assignment, which this may then overtake); or a refund of its order.
impl CommissionMessage for ReverseCommission {
    fn commission_id(&self) -> Uuid {
        self.commission_id
    }

    fn command(&self) -> CommissionCommand {
        wire::reverse(self)
    }
}

/// `commission-reinstatement`: compensation of a refund, the reversed commission assigned again.
impl CommissionMessage for ReinstateCommission {
    fn commission_id(&self) -> Uuid {
        self.commission_id
    }

    fn command(&self) -> CommissionCommand {
        wire::reinstate(self)
    }
}

/// The handler of one commissions topic: decides its command on its commission.
#[derive(Debug)]
pub struct OnCommission<M>(PhantomData<fn(M)>);

impl<M> Default for OnCommission<M> {
    fn default() -> Self {
        OnCommission(PhantomData)
    }
}

impl<M: CommissionMessage> Handler for OnCommission<M> {
    type Message = M;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<M>,
    ) -> Result<(), HandlerError> {
        let message = &incoming.message;
        decide(
            tx,
            &incoming.properties,
            message.commission_id(),
            message.command(),
        )
        .await
    }
}

pub type Assign = OnCommission<AssignCommission>;
pub type Reverse = OnCommission<ReverseCommission>;
pub type Reinstate = OnCommission<ReinstateCommission>;
