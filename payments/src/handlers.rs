//! The handlers of `payments-request`, `payments-cancellation` and the claw-back topics, each in
//! the transaction the consumer runner opened (with the inbox record). A request is decided with its payout attempt,
//! leaving the provider call to the payout worker through a `payouts_due` row committed with the
//! events. No HTTP happens here.

use crate::domain::{Error, PaymentCommand};
use crate::payouts;
use crate::stream::{commit, load, on_stream};
use crate::wire;
use eventstore::Aggregate;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, Replies};
use schemas::Message;
use schemas::commands::{CancelClawBack, CancelPayment, ClawBackPayment, RequestPayment};
use schemas::events::PaymentsEvent;
use serde::Serialize;
use sqlx::PgConnection;
use std::marker::PhantomData;
use uuid::Uuid;

const REPLIES: Replies<PaymentsEvent> = Replies {
    rejected: PaymentsEvent::CommandRejected,
    already_applied: PaymentsEvent::CommandAlreadyApplied,
};

fn refused(error: Error) -> (&'static str, String) {
    (error.code(), error.to_string())
}

/// `payments-request`: records the request and the payout attempt (its idempotency key is the
/// payment id), and schedules the provider call. A retried request is already applied and
/// schedules nothing, so a payment is paid out at most once however often it is requested.
#[derive(Debug, Default)]
pub struct Request;

impl Handler for Request {
    type Message = RequestPayment;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<RequestPayment>,
    ) -> Result<(), HandlerError> {
        let request = wire::request(&incoming.message);
        let payment_id = request.payment_id;
        let key = payment_id.to_string();
        let (mut payment, version) = load(tx, payment_id).await?;
        let requested = match payment.decide(&PaymentCommand::Request(request)) {
            Ok(events) if !events.is_empty() => events,
            refused_or_applied => {
                let decision = refused_or_applied.map(|_| Vec::new()).map_err(refused);
                return effects::commit_decision(tx, &incoming.properties, &key, decision, REPLIES)
                    .await;
            }
        };
        requested.iter().for_each(|event| payment.apply(event));
        // Attempted in the same transaction as the request: a requested payment always has its
        // payout scheduled, and once attempted it can only be resolved, never attempted again.
        let attempted = payment
            .decide(&PaymentCommand::AttemptPayout { payment_id })
            .map_err(|error| HandlerError::Permanent {
                code: error.code().into(),
                reason: error.to_string(),
            })?;
        let events: Vec<_> = requested.into_iter().chain(attempted).collect();
        commit(tx, &incoming.properties, payment_id, version, &events).await?;
        payouts::schedule(tx, payment_id, &incoming.properties).await?;
        Ok(())
    }
}

/// A command of one of payments' topics decided on one payment alone: the payment, and the
/// domain command.
pub trait PaymentMessage: Message + Serialize + Send + Sync + 'static {
    fn payment_id(&self) -> Uuid;
    fn command(&self) -> PaymentCommand;
}

/// `payments-cancellation`: cancels a payment never requested, so that its request, should it
/// still arrive, is refused; a requested one is refused with where it stands (in flight,
/// completed, failed), which the saga that asked acts on.
impl PaymentMessage for CancelPayment {
    fn payment_id(&self) -> Uuid {
        self.payment_id
    }

    fn command(&self) -> PaymentCommand {
        PaymentCommand::Cancel {
            payment_id: self.payment_id,
            reason: self.reason.clone(),
        }
    }
}

/// `payments-clawback`: an order-refund saga takes a completed payout back from the partner's
/// balance; a payout never made has nothing to claw back (already applied).
impl PaymentMessage for ClawBackPayment {
    fn payment_id(&self) -> Uuid {
        self.payment_id
    }

    fn command(&self) -> PaymentCommand {
        PaymentCommand::ClawBack {
            payment_id: self.payment_id,
            clawback_id: self.clawback_id,
            reason: self.reason.clone(),
        }
    }
}

/// `payments-clawback-cancellation`: compensation, a claw-back taken back.
impl PaymentMessage for CancelClawBack {
    fn payment_id(&self) -> Uuid {
        self.payment_id
    }

    fn command(&self) -> PaymentCommand {
        PaymentCommand::CancelClawBack {
            payment_id: self.payment_id,
            clawback_id: self.clawback_id,
            reason: self.reason.clone(),
        }
    }
}

/// The handler of one such topic: decides its command on its payment and commits the decision
/// (its events, already applied, or refused).
#[derive(Debug)]
pub struct OnPayment<M>(PhantomData<fn(M)>);

impl<M> Default for OnPayment<M> {
    fn default() -> Self {
        OnPayment(PhantomData)
    }
}

impl<M: PaymentMessage> Handler for OnPayment<M> {
    type Message = M;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<M>,
    ) -> Result<(), HandlerError> {
        let payment_id = incoming.message.payment_id();
        let (payment, version) = load(tx, payment_id).await?;
        let stream_id = wire::payment_stream(payment_id);
        let decision = payment
            .decide(&incoming.message.command())
            .map(|events| on_stream(&stream_id, version, &events))
            .map_err(refused);
        let key = payment_id.to_string();
        effects::commit_decision(tx, &incoming.properties, &key, decision, REPLIES).await
    }
}

pub type Cancel = OnPayment<CancelPayment>;
pub type ClawBack = OnPayment<ClawBackPayment>;
pub type ClawBackCancellation = OnPayment<CancelClawBack>;
