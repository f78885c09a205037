//! The only place payments' domain meets the wire: `RequestPayment` from Avro into a domain
//! request, and domain events into `payments-events` records (which are also the event store's
//! payloads) and back. Upcasting happens here, by Avro schema resolution from a stored event's
//! schema version.

use crate::domain::{Clawback, PaymentEvent, PaymentRequest};
use eventstore::Aggregate;
use eventstore::RecordedEvent;
use schemas::commands::RequestPayment;
use schemas::events::{
    PaymentCancelled, PaymentClawBackCancelled, PaymentClawedBack, PaymentCompleted, PaymentFailed,
    PaymentRequested, PaymentsEvent, PayoutAttempted, PayoutOutcomeUnknown,
};
use uuid::Uuid;

/// Why a stored event cannot be read back as a domain event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stored event undecodable")]
    Decode(#[from] schemas::Error),
    #[error("payout of payment {payment_id} has an idempotency key that is not a UUID: {key:?}")]
    IdempotencyKey { payment_id: Uuid, key: String },
}

pub fn request(command: &RequestPayment) -> PaymentRequest {
    PaymentRequest {
        payment_id: command.payment_id,
        commission_id: command.commission_id,
        partner_id: command.partner_id,
        campaign_id: command.campaign_id,
        amount: command.amount.clone(),
    }
}

pub fn payment_event(event: &PaymentEvent) -> PaymentsEvent {
    match event {
        PaymentEvent::Requested(r) => PaymentsEvent::PaymentRequested(PaymentRequested {
            payment_id: r.payment_id,
            commission_id: r.commission_id,
            campaign_id: r.campaign_id,
            partner_id: r.partner_id,
            amount: r.amount.clone(),
        }),
        PaymentEvent::PayoutAttempted {
            payment_id,
            idempotency_key,
        } => PaymentsEvent::PayoutAttempted(PayoutAttempted {
            payment_id: *payment_id,
            idempotency_key: idempotency_key.to_string(),
        }),
        PaymentEvent::PayoutOutcomeUnknown { payment_id, reason } => {
            PaymentsEvent::PayoutOutcomeUnknown(PayoutOutcomeUnknown {
                payment_id: *payment_id,
                reason: reason.clone(),
            })
        }
        PaymentEvent::Completed {
            payment_id,
            provider_reference,
        } => PaymentsEvent::PaymentCompleted(PaymentCompleted {
            payment_id: *payment_id,
            provider_reference: provider_reference.clone(),
        }),
        PaymentEvent::Failed { payment_id, reason } => {
            PaymentsEvent::PaymentFailed(PaymentFailed {
                payment_id: *payment_id,
                reason: reason.clone(),
            })
        }
        PaymentEvent::Cancelled { payment_id, reason } => {
            PaymentsEvent::PaymentCancelled(PaymentCancelled {
                payment_id: *payment_id,
                reason: reason.clone(),
            })
        }
        PaymentEvent::ClawedBack(c) => PaymentsEvent::PaymentClawedBack(PaymentClawedBack {
            payment_id: c.payment_id,
            clawback_id: c.clawback_id,
            partner_id: c.partner_id,
            amount: c.amount.clone(),
            reason: c.reason.clone(),
        }),
        PaymentEvent::ClawBackCancelled(c) => {
            PaymentsEvent::PaymentClawBackCancelled(PaymentClawBackCancelled {
                payment_id: c.payment_id,
                clawback_id: c.clawback_id,
                partner_id: c.partner_id,
                amount: c.amount.clone(),
                reason: c.reason.clone(),
            })
        }
    }
}

/// A stored event as a domain event; replies (rejections) are never stored.
pub fn stored(event: &RecordedEvent) -> Result<Option<PaymentEvent>, Error> {
    Ok(match messaging::stored::decode::<PaymentsEvent>(event)? {
        PaymentsEvent::PaymentRequested(r) => Some(PaymentEvent::Requested(PaymentRequest {
            payment_id: r.payment_id,
            commission_id: r.commission_id,
            partner_id: r.partner_id,
            campaign_id: r.campaign_id,
            amount: r.amount,
        })),
        PaymentsEvent::PayoutAttempted(a) => Some(PaymentEvent::PayoutAttempted {
            payment_id: a.payment_id,
            idempotency_key: a
                .idempotency_key
                .parse()
                .map_err(|_| Error::IdempotencyKey {
                    payment_id: a.payment_id,
                    key: a.idempotency_key.clone(),
                })?,
        }),
        PaymentsEvent::PayoutOutcomeUnknown(u) => Some(PaymentEvent::PayoutOutcomeUnknown {
            payment_id: u.payment_id,
            reason: u.reason,
        }),
        PaymentsEvent::PaymentCompleted(c) => Some(PaymentEvent::Completed {
            payment_id: c.payment_id,
            provider_reference: c.provider_reference,
        }),
        PaymentsEvent::PaymentFailed(f) => Some(PaymentEvent::Failed {
            payment_id: f.payment_id,
            reason: f.reason,
        }),
        PaymentsEvent::PaymentCancelled(c) => Some(PaymentEvent::Cancelled {
            payment_id: c.payment_id,
            reason: c.reason,
        }),
        PaymentsEvent::PaymentClawedBack(c) => Some(PaymentEvent::ClawedBack(Clawback {
            payment_id: c.payment_id,
            clawback_id: c.clawback_id,
            partner_id: c.partner_id,
            amount: c.amount,
            reason: c.reason,
        })),
        PaymentsEvent::PaymentClawBackCancelled(c) => {
            Some(PaymentEvent::ClawBackCancelled(Clawback {
                payment_id: c.payment_id,
                clawback_id: c.clawback_id,
                partner_id: c.partner_id,
                amount: c.amount,
                reason: c.reason,
            }))
        }
        PaymentsEvent::CommandRejected(_) | PaymentsEvent::CommandAlreadyApplied(_) => None,
    })
}

/// A payment's state, folded from its stream's events.
pub fn fold(events: &[RecordedEvent]) -> Option<serde_json::Value> {
    eventstore::api::fold_state(
        events,
        |event| stored(event).ok()?,
        crate::domain::Payment::apply,
    )
}

/// The stream of one payment.
pub fn payment_stream(payment_id: Uuid) -> String {
    format!("payment-{payment_id}")
}
