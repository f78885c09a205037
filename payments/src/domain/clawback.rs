//! Claw-backs: the order a completed payout paid a commission for was refunded, so the payout is
//! taken back from the partner's balance (one claw-back per payment at a time). A payment that
//! was never paid (failed, cancelled, or unknown here) has nothing to claw back: the command
//! changes nothing, which answers it. One still in flight is refused: its outcome is not known.
//! Cancelling a claw-back (a compensation) credits the balance again; cancelling one that is not
//! in place changes nothing.

use super::{Clawback, Error, Payment, PaymentEvent, State};
use uuid::Uuid;

impl Payment {
    pub(super) fn claw_back(
        &self,
        payment_id: Uuid,
        clawback_id: Uuid,
        reason: &str,
    ) -> Result<Vec<PaymentEvent>, Error> {
        match &self.state {
            State::Completed {
                request,
                clawed_back: None,
                ..
            } => Ok(vec![PaymentEvent::ClawedBack(Clawback {
                payment_id: request.payment_id,
                clawback_id,
                partner_id: request.partner_id,
                amount: request.amount.clone(),
                reason: reason.to_owned(),
            })]),
            State::Completed {
                clawed_back: Some(existing),
                ..
            } if *existing == clawback_id => Ok(vec![]),
            State::Completed { .. } => Err(Error::AlreadyClawedBack(payment_id)),
            State::Requested(_) | State::Attempted { .. } => Err(Error::InFlight(payment_id)),
            State::Unknown | State::Failed(_) | State::Cancelled => Ok(vec![]),
        }
    }

    pub(super) fn cancel_claw_back(&self, clawback_id: Uuid, reason: &str) -> Vec<PaymentEvent> {
        match &self.state {
            State::Completed {
                request,
                clawed_back: Some(existing),
                ..
            } if *existing == clawback_id => vec![PaymentEvent::ClawBackCancelled(Clawback {
                payment_id: request.payment_id,
                clawback_id,
                partner_id: request.partner_id,
                amount: request.amount.clone(),
                reason: reason.to_owned(),
            })],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{Money, Payment, PaymentCommand, PaymentEvent, PaymentRequest};
    use eventstore::Aggregate;
    use uuid::Uuid;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn given(events: &[PaymentEvent]) -> Payment {
        Payment::folded(events)
    }

    fn requested() -> PaymentEvent {
        PaymentEvent::Requested(PaymentRequest {
            payment_id: id(1),
            commission_id: id(2),
            partner_id: id(3),
            campaign_id: id(4),
            amount: Money::new(500, "EUR"),
        })
    }

    fn paid() -> Vec<PaymentEvent> {
        vec![
            requested(),
            PaymentEvent::PayoutAttempted {
                payment_id: id(1),
                idempotency_key: id(1),
            },
            PaymentEvent::Completed {
                payment_id: id(1),
                provider_reference: "po_1".into(),
            },
        ]
    }

    fn claw_back(clawback: u128) -> PaymentCommand {
        PaymentCommand::ClawBack {
            payment_id: id(1),
            clawback_id: id(clawback),
            reason: "order A-1 refunded".into(),
        }
    }

    fn cancel(clawback: u128) -> PaymentCommand {
        PaymentCommand::CancelClawBack {
            payment_id: id(1),
            clawback_id: id(clawback),
            reason: "release-budget rejected".into(),
        }
    }

    #[test]
    fn a_paid_payout_is_clawed_back_once_and_the_claw_back_can_be_cancelled() {
        let payment = given(&paid());
        let clawed = payment.decide(&claw_back(9)).unwrap();
        let [PaymentEvent::ClawedBack(clawback)] = clawed.as_slice() else {
            panic!("clawed back: {clawed:?}");
        };
        assert_eq!(
            (clawback.partner_id, clawback.amount.clone()),
            (id(3), Money::new(500, "EUR"))
        );
        let mut history = paid();
        history.extend(clawed.clone());
        let payment = given(&history);
        assert_eq!(payment.decide(&claw_back(9)), Ok(vec![]), "a retry");
        assert_eq!(
            payment.decide(&claw_back(8)).map_err(|e| e.code()),
            Err("payment_already_clawed_back")
        );
        assert_eq!(payment.decide(&cancel(8)), Ok(vec![]), "not that claw-back");
        let cancelled = payment.decide(&cancel(9)).unwrap();
        assert!(matches!(
            cancelled.as_slice(),
            [PaymentEvent::ClawBackCancelled(c)] if c.amount == Money::new(500, "EUR")
        ));
        history.extend(cancelled);
        assert_eq!(
            given(&history).decide(&cancel(9)),
            Ok(vec![]),
            "undone once"
        );
    }

    #[test]
    fn a_payout_never_made_has_nothing_to_claw_back_and_one_in_flight_is_refused() {
        let failed = vec![
            requested(),
            PaymentEvent::PayoutAttempted {
                payment_id: id(1),
                idempotency_key: id(1),
            },
            PaymentEvent::Failed {
                payment_id: id(1),
                reason: "declined".into(),
            },
        ];
        for never_paid in [vec![], failed] {
            assert_eq!(given(&never_paid).decide(&claw_back(9)), Ok(vec![]));
        }
        assert_eq!(
            given(&[requested()])
                .decide(&claw_back(9))
                .map_err(|e| e.code()),
            Err("payment_in_flight")
        );
    }
}
