//! The payments domain, pure: the `Payment` aggregate, a payout of one commission through an
//! external provider, requested → payout attempted → completed or failed.
//!
//! A payout is attempted at most once. The handler records `PayoutAttempted` (committed) before it
//! calls the provider with the payment id as idempotency key, and records the provider's answer
//! afterwards: `Complete`, `Fail`, or `RecordOutcomeUnknown` on a timeout. Once an attempt is
//! recorded, whatever happened next (a timeout, a crash before the answer was recorded), `decide`
//! refuses another attempt: the outcome is resolved by asking the provider about the key
//! ([`Payment::needs_resolution`]) and recording its answer. A provider that never saw the key is
//! called again with the same key: it executes a key at most once, so that is no second attempt.
//!
//! A payment is a saga's pivot: once attempted it can only complete or fail. `Cancel` is how a
//! saga whose request went unanswered learns which: a payment never requested is cancelled (a
//! tombstone, so that the request, should it still arrive, is refused and never paid); one
//! requested is in flight, completed or failed, and the cancel is refused saying which.
//!
//! A completed payout can be clawed back from the partner's balance when its order is refunded
//! (`clawback`).
//!
//! Retries are the same command (ids come from the client), so a command whose effect is already
//! in place decides nothing (an empty event list) before checking any other rule.

mod clawback;

use eventstore::Aggregate;
use serde::Serialize;
use uuid::Uuid;

pub use schemas::values::Money;

/// What `Request` asks for and `Requested` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRequest {
    /// Also the payout provider's idempotency key.
    pub payment_id: Uuid,
    pub commission_id: Uuid,
    pub partner_id: Uuid,
    pub campaign_id: Uuid,
    pub amount: Money,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Requested,
    /// The provider was (or may have been) called; its answer is not recorded yet.
    PayoutAttempted,
    /// The provider's answer did not arrive; it must be asked for the outcome.
    OutcomeUnknown,
    Completed,
    Failed,
    /// Cancelled before it was requested: it will never be paid.
    Cancelled,
}

/// One payout of one commission to its partner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Payment {
    state: State,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum State {
    #[default]
    Unknown,
    Requested(PaymentRequest),
    Attempted {
        request: PaymentRequest,
        outcome_unknown: bool,
    },
    Completed {
        request: PaymentRequest,
        provider_reference: String,
        /// The claw-back that took the payout back from the partner's balance, if one did.
        clawed_back: Option<Uuid>,
    },
    Failed(PaymentRequest),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    Request(PaymentRequest),
    /// The handler is about to call the provider.
    AttemptPayout {
        payment_id: Uuid,
    },
    /// The provider paid.
    Complete {
        payment_id: Uuid,
        provider_reference: String,
    },
    /// The provider refused the payout.
    Fail {
        payment_id: Uuid,
        reason: String,
    },
    /// The provider's answer did not arrive (a timeout, a broken connection).
    RecordOutcomeUnknown {
        payment_id: Uuid,
        reason: String,
    },
    /// A saga gave up waiting for the payment: cancel it unless it was requested.
    Cancel {
        payment_id: Uuid,
        reason: String,
    },
    /// The order the payout paid a commission for was refunded: take it back from the partner's
    /// balance, if it was paid.
    ClawBack {
        payment_id: Uuid,
        clawback_id: Uuid,
        reason: String,
    },
    /// Compensation: take the claw-back back.
    CancelClawBack {
        payment_id: Uuid,
        clawback_id: Uuid,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEvent {
    Requested(PaymentRequest),
    PayoutAttempted {
        payment_id: Uuid,
        /// What the provider call carries, so that the provider pays it at most once.
        idempotency_key: Uuid,
    },
    PayoutOutcomeUnknown {
        payment_id: Uuid,
        reason: String,
    },
    Completed {
        payment_id: Uuid,
        /// The provider's id of the payout.
        provider_reference: String,
    },
    Failed {
        payment_id: Uuid,
        reason: String,
    },
    Cancelled {
        payment_id: Uuid,
        reason: String,
    },
    ClawedBack(Clawback),
    ClawBackCancelled(Clawback),
}

/// A claw-back of a completed payout: what `ClawedBack` and `ClawBackCancelled` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clawback {
    pub payment_id: Uuid,
    pub clawback_id: Uuid,
    pub partner_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

impl Payment {
    pub fn request(&self) -> Option<&PaymentRequest> {
        match &self.state {
            State::Unknown | State::Cancelled => None,
            State::Requested(request)
            | State::Attempted { request, .. }
            | State::Completed { request, .. }
            | State::Failed(request) => Some(request),
        }
    }

    pub fn status(&self) -> Option<Status> {
        match &self.state {
            State::Unknown => None,
            State::Requested(_) => Some(Status::Requested),
            State::Attempted {
                outcome_unknown: false,
                ..
            } => Some(Status::PayoutAttempted),
            State::Attempted {
                outcome_unknown: true,
                ..
            } => Some(Status::OutcomeUnknown),
            State::Completed { .. } => Some(Status::Completed),
            State::Failed(_) => Some(Status::Failed),
            State::Cancelled => Some(Status::Cancelled),
        }
    }

    /// The key the provider knows the payout by, once a payout was attempted.
    pub fn idempotency_key(&self) -> Option<Uuid> {
        match &self.state {
            State::Unknown | State::Requested(_) | State::Cancelled => None,
            State::Attempted { request, .. }
            | State::Completed { request, .. }
            | State::Failed(request) => Some(request.payment_id),
        }
    }

    /// Whether a payout may have happened without its outcome being recorded: the provider must
    /// be asked, never called to pay again.
    pub fn needs_resolution(&self) -> bool {
        matches!(self.state, State::Attempted { .. })
    }

    /// The provider paid.
    fn complete(
        &self,
        payment_id: Uuid,
        provider_reference: &str,
    ) -> Result<Vec<PaymentEvent>, Error> {
        match &self.state {
            State::Unknown => Err(Error::NotFound(payment_id)),
            State::Cancelled => Err(Error::Cancelled(payment_id)),
            State::Requested(_) => Err(Error::PayoutNotAttempted(payment_id)),
            State::Attempted { request, .. } => Ok(vec![PaymentEvent::Completed {
                payment_id: request.payment_id,
                provider_reference: provider_reference.to_owned(),
            }]),
            State::Completed {
                provider_reference: recorded,
                ..
            } => {
                if recorded == provider_reference {
                    Ok(vec![])
                } else {
                    Err(Error::ProviderReferenceMismatch {
                        payment_id,
                        recorded: recorded.clone(),
                        reported: provider_reference.to_owned(),
                    })
                }
            }
            State::Failed(_) => Err(Error::AlreadyFailed(payment_id)),
        }
    }

    /// The provider refused the payout.
    fn fail(&self, payment_id: Uuid, reason: &str) -> Result<Vec<PaymentEvent>, Error> {
        match &self.state {
            State::Unknown => Err(Error::NotFound(payment_id)),
            State::Cancelled => Err(Error::Cancelled(payment_id)),
            State::Requested(_) => Err(Error::PayoutNotAttempted(payment_id)),
            State::Attempted { request, .. } => Ok(vec![PaymentEvent::Failed {
                payment_id: request.payment_id,
                reason: reason.to_owned(),
            }]),
            State::Failed(_) => Ok(vec![]),
            State::Completed { .. } => Err(Error::AlreadyCompleted(payment_id)),
        }
    }

    /// The provider's answer did not arrive.
    fn outcome_unknown(&self, payment_id: Uuid, reason: &str) -> Result<Vec<PaymentEvent>, Error> {
        match &self.state {
            State::Unknown => Err(Error::NotFound(payment_id)),
            State::Cancelled => Err(Error::Cancelled(payment_id)),
            State::Requested(_) => Err(Error::PayoutNotAttempted(payment_id)),
            State::Attempted {
                request,
                outcome_unknown: false,
            } => Ok(vec![PaymentEvent::PayoutOutcomeUnknown {
                payment_id: request.payment_id,
                reason: reason.to_owned(),
            }]),
            // A known outcome stands; a late or repeated timeout changes nothing.
            State::Attempted {
                outcome_unknown: true,
                ..
            }
            | State::Completed { .. }
            | State::Failed(_) => Ok(vec![]),
        }
    }

    fn request_payment(&self, request: &PaymentRequest) -> Result<Vec<PaymentEvent>, Error> {
        if self.state == State::Cancelled {
            return Err(Error::Cancelled(request.payment_id));
        }
        if let Some(existing) = self.request() {
            return if existing == request {
                Ok(vec![])
            } else {
                Err(Error::AlreadyRequested(request.payment_id))
            };
        }
        let currency = &request.amount.currency;
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
            return Err(Error::InvalidCurrency(currency.clone()));
        }
        if request.amount.amount <= 0 {
            return Err(Error::InvalidAmount(request.amount.amount));
        }
        Ok(vec![PaymentEvent::Requested(request.clone())])
    }
}

impl Aggregate for Payment {
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = Error;

    fn decide(&self, command: &PaymentCommand) -> Result<Vec<PaymentEvent>, Error> {
        match command {
            PaymentCommand::Request(request) => self.request_payment(request),
            PaymentCommand::ClawBack {
                payment_id,
                clawback_id,
                reason,
            } => self.claw_back(*payment_id, *clawback_id, reason),
            PaymentCommand::CancelClawBack {
                clawback_id,
                reason,
                ..
            } => Ok(self.cancel_claw_back(*clawback_id, reason)),
            PaymentCommand::Cancel { payment_id, reason } => match &self.state {
                State::Unknown => Ok(vec![PaymentEvent::Cancelled {
                    payment_id: *payment_id,
                    reason: reason.clone(),
                }]),
                State::Cancelled => Ok(vec![]),
                State::Requested(_) | State::Attempted { .. } => Err(Error::InFlight(*payment_id)),
                State::Completed { .. } => Err(Error::AlreadyCompleted(*payment_id)),
                State::Failed(_) => Err(Error::AlreadyFailed(*payment_id)),
            },
            PaymentCommand::AttemptPayout { payment_id } => match &self.state {
                State::Unknown => Err(Error::NotFound(*payment_id)),
                State::Cancelled => Err(Error::Cancelled(*payment_id)),
                State::Requested(request) => Ok(vec![PaymentEvent::PayoutAttempted {
                    payment_id: request.payment_id,
                    idempotency_key: request.payment_id,
                }]),
                State::Attempted { .. } | State::Completed { .. } | State::Failed(_) => {
                    Err(Error::PayoutAlreadyAttempted(*payment_id))
                }
            },
            PaymentCommand::Complete {
                payment_id,
                provider_reference,
            } => self.complete(*payment_id, provider_reference),
            PaymentCommand::Fail { payment_id, reason } => self.fail(*payment_id, reason),
            PaymentCommand::RecordOutcomeUnknown { payment_id, reason } => {
                self.outcome_unknown(*payment_id, reason)
            }
        }
    }

    fn apply(&mut self, event: &PaymentEvent) {
        self.state = match (std::mem::take(&mut self.state), event) {
            (_, PaymentEvent::Requested(request)) => State::Requested(request.clone()),
            (State::Unknown, PaymentEvent::Cancelled { .. }) => State::Cancelled,
            (State::Requested(request), PaymentEvent::PayoutAttempted { .. }) => State::Attempted {
                request,
                outcome_unknown: false,
            },
            (State::Attempted { request, .. }, PaymentEvent::PayoutOutcomeUnknown { .. }) => {
                State::Attempted {
                    request,
                    outcome_unknown: true,
                }
            }
            (
                State::Attempted { request, .. },
                PaymentEvent::Completed {
                    provider_reference, ..
                },
            ) => State::Completed {
                request,
                provider_reference: provider_reference.clone(),
                clawed_back: None,
            },
            (
                State::Completed {
                    request,
                    provider_reference,
                    ..
                },
                PaymentEvent::ClawedBack(clawback),
            ) => State::Completed {
                request,
                provider_reference,
                clawed_back: Some(clawback.clawback_id),
            },
            (
                State::Completed {
                    request,
                    provider_reference,
                    ..
                },
                PaymentEvent::ClawBackCancelled(_),
            ) => State::Completed {
                request,
                provider_reference,
                clawed_back: None,
            },
            (State::Attempted { request, .. }, PaymentEvent::Failed { .. }) => {
                State::Failed(request)
            }
            (
                state,
                PaymentEvent::PayoutAttempted { .. }
                | PaymentEvent::PayoutOutcomeUnknown { .. }
                | PaymentEvent::Completed { .. }
                | PaymentEvent::Failed { .. }
                | PaymentEvent::Cancelled { .. }
                | PaymentEvent::ClawedBack(_)
                | PaymentEvent::ClawBackCancelled(_),
            ) => state,
        };
    }
}

/// Why a command was rejected; nothing changed. [`Error::code`] is the stable machine-readable
/// reason published in `CommandRejected`, the message its human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an ISO 4217 currency code")]
    InvalidCurrency(String),
    #[error("a payout must be positive, got {0}")]
    InvalidAmount(i64),
    #[error("payment {0} was already requested with other data")]
    AlreadyRequested(Uuid),
    #[error("payment {0} was never requested")]
    NotFound(Uuid),
    #[error("a payout of payment {0} was already attempted; ask the provider for its outcome")]
    PayoutAlreadyAttempted(Uuid),
    #[error("no payout of payment {0} was attempted, so there is no outcome to record")]
    PayoutNotAttempted(Uuid),
    #[error("payment {0} is already completed")]
    AlreadyCompleted(Uuid),
    #[error("payment {0} has already failed")]
    AlreadyFailed(Uuid),
    #[error(
        "payment {0} was requested: its payout may be under way, so it can no longer be cancelled"
    )]
    InFlight(Uuid),
    #[error("payment {0} was cancelled and will never be paid")]
    Cancelled(Uuid),
    #[error("payment {0} was already clawed back by another claw-back")]
    AlreadyClawedBack(Uuid),
    #[error(
        "payment {payment_id} was completed as {recorded:?}, the provider now reports {reported:?}"
    )]
    ProviderReferenceMismatch {
        payment_id: Uuid,
        recorded: String,
        reported: String,
    },
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidCurrency(_) => "invalid_currency",
            Error::InvalidAmount(_) => "invalid_amount",
            Error::AlreadyRequested(_) => "payment_already_requested",
            Error::NotFound(_) => "payment_not_found",
            Error::PayoutAlreadyAttempted(_) => "payout_already_attempted",
            Error::PayoutNotAttempted(_) => "payout_not_attempted",
            Error::AlreadyCompleted(_) => "payment_already_completed",
            Error::AlreadyFailed(_) => "payment_already_failed",
            Error::InFlight(_) => "payment_in_flight",
            Error::Cancelled(_) => "payment_cancelled",
            Error::AlreadyClawedBack(_) => "payment_already_clawed_back",
            Error::ProviderReferenceMismatch { .. } => "provider_reference_mismatch",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn payment(given: &[PaymentEvent]) -> Payment {
        Payment::folded(given)
    }

    // Given these events, when this command: the events decided, or the rejection('s code).
    fn when(given: &[PaymentEvent], command: PaymentCommand) -> Result<Vec<PaymentEvent>, Error> {
        Payment::given_when(given, &command)
    }

    fn rejection(given: &[PaymentEvent], command: PaymentCommand) -> &'static str {
        when(given, command).expect_err("a rejection").code()
    }

    fn request() -> PaymentRequest {
        PaymentRequest {
            payment_id: id(1),
            commission_id: id(2),
            partner_id: id(3),
            campaign_id: id(4),
            amount: Money::new(300, "EUR"),
        }
    }

    fn requested() -> PaymentEvent {
        PaymentEvent::Requested(request())
    }

    fn attempt() -> PaymentCommand {
        PaymentCommand::AttemptPayout { payment_id: id(1) }
    }

    fn attempted() -> PaymentEvent {
        PaymentEvent::PayoutAttempted {
            payment_id: id(1),
            idempotency_key: id(1),
        }
    }

    fn complete(reference: &str) -> PaymentCommand {
        PaymentCommand::Complete {
            payment_id: id(1),
            provider_reference: reference.into(),
        }
    }

    fn completed(reference: &str) -> PaymentEvent {
        PaymentEvent::Completed {
            payment_id: id(1),
            provider_reference: reference.into(),
        }
    }

    fn fail(reason: &str) -> PaymentCommand {
        PaymentCommand::Fail {
            payment_id: id(1),
            reason: reason.into(),
        }
    }

    fn failed(reason: &str) -> PaymentEvent {
        PaymentEvent::Failed {
            payment_id: id(1),
            reason: reason.into(),
        }
    }

    fn timed_out() -> PaymentCommand {
        PaymentCommand::RecordOutcomeUnknown {
            payment_id: id(1),
            reason: "provider timed out".into(),
        }
    }

    fn unknown() -> PaymentEvent {
        PaymentEvent::PayoutOutcomeUnknown {
            payment_id: id(1),
            reason: "provider timed out".into(),
        }
    }

    #[test]
    fn a_payment_is_requested() {
        assert_eq!(
            when(&[], PaymentCommand::Request(request())),
            Ok(vec![requested()])
        );
        assert_eq!(payment(&[requested()]).status(), Some(Status::Requested));
    }

    #[test]
    fn requesting_the_same_payment_again_is_a_no_op_in_every_state() {
        let histories = [
            vec![requested()],
            vec![requested(), attempted()],
            vec![requested(), attempted(), unknown()],
            vec![requested(), attempted(), completed("po_1")],
            vec![requested(), attempted(), failed("account closed")],
        ];
        for given in histories {
            assert_eq!(when(&given, PaymentCommand::Request(request())), Ok(vec![]));
        }
    }

    #[test]
    fn requesting_a_payment_id_again_with_other_data_is_rejected() {
        let other = PaymentRequest {
            amount: Money::new(301, "EUR"),
            ..request()
        };
        assert_eq!(
            rejection(&[requested()], PaymentCommand::Request(other)),
            "payment_already_requested"
        );
    }

    #[test]
    fn a_request_with_an_invalid_amount_is_rejected() {
        let cases = [
            (Money::new(0, "EUR"), "invalid_amount"),
            (Money::new(-5, "EUR"), "invalid_amount"),
            (Money::new(300, "Eur"), "invalid_currency"),
        ];
        for (amount, code) in cases {
            let request = PaymentRequest {
                amount,
                ..request()
            };
            assert_eq!(rejection(&[], PaymentCommand::Request(request)), code);
        }
    }

    #[test]
    fn a_payout_is_attempted_with_the_payment_id_as_idempotency_key() {
        assert_eq!(when(&[requested()], attempt()), Ok(vec![attempted()]));
        let attempted = payment(&[requested(), attempted()]);
        assert_eq!(attempted.status(), Some(Status::PayoutAttempted));
        assert_eq!(attempted.idempotency_key(), Some(id(1)));
        assert_eq!(payment(&[requested()]).idempotency_key(), None);
    }

    #[test]
    fn a_payout_is_never_attempted_twice() {
        let histories = [
            vec![requested(), attempted()],
            vec![requested(), attempted(), unknown()],
            vec![requested(), attempted(), completed("po_1")],
            vec![requested(), attempted(), failed("account closed")],
        ];
        for given in histories {
            assert_eq!(rejection(&given, attempt()), "payout_already_attempted");
        }
    }

    #[test]
    fn an_attempted_payout_completes_once() {
        let given = [requested(), attempted()];
        assert_eq!(when(&given, complete("po_1")), Ok(vec![completed("po_1")]));
        let given = [requested(), attempted(), completed("po_1")];
        assert_eq!(when(&given, complete("po_1")), Ok(vec![]));
        assert_eq!(payment(&given).status(), Some(Status::Completed));
    }

    #[test]
    fn a_completed_payment_reported_with_another_reference_is_rejected() {
        let given = [requested(), attempted(), completed("po_1")];
        assert_eq!(
            rejection(&given, complete("po_2")),
            "provider_reference_mismatch"
        );
    }

    #[test]
    fn an_attempted_payout_fails_once() {
        let given = [requested(), attempted()];
        assert_eq!(
            when(&given, fail("account closed")),
            Ok(vec![failed("account closed")])
        );
        let given = [requested(), attempted(), failed("account closed")];
        assert_eq!(when(&given, fail("limit exceeded")), Ok(vec![]));
        assert_eq!(payment(&given).status(), Some(Status::Failed));
    }

    #[test]
    fn a_completed_payment_cannot_fail_and_a_failed_one_cannot_complete() {
        let completed = [requested(), attempted(), completed("po_1")];
        assert_eq!(
            rejection(&completed, fail("account closed")),
            "payment_already_completed"
        );
        let failed = [requested(), attempted(), failed("account closed")];
        assert_eq!(
            rejection(&failed, complete("po_1")),
            "payment_already_failed"
        );
    }

    #[test]
    fn no_outcome_is_recorded_before_a_payout_is_attempted() {
        for command in [complete("po_1"), fail("account closed"), timed_out()] {
            assert_eq!(rejection(&[requested()], command), "payout_not_attempted");
        }
    }

    #[test]
    fn commands_on_a_payment_never_requested_are_rejected() {
        for command in [
            attempt(),
            complete("po_1"),
            fail("account closed"),
            timed_out(),
        ] {
            assert_eq!(rejection(&[], command), "payment_not_found");
        }
    }

    #[test]
    fn an_unknown_outcome_is_resolved_by_the_providers_answer() {
        let given = [requested(), attempted()];
        assert_eq!(when(&given, timed_out()), Ok(vec![unknown()]));
        let given = [requested(), attempted(), unknown()];
        let payment = payment(&given);
        assert_eq!(payment.status(), Some(Status::OutcomeUnknown));
        assert!(payment.needs_resolution());
        assert_eq!(when(&given, complete("po_1")), Ok(vec![completed("po_1")]));
        assert_eq!(
            when(&given, fail("no such payout")),
            Ok(vec![failed("no such payout")])
        );
    }

    #[test]
    fn an_attempt_without_a_recorded_outcome_needs_resolution() {
        // A crash between the provider call and recording its answer leaves this state.
        assert!(payment(&[requested(), attempted()]).needs_resolution());
        assert!(!payment(&[requested()]).needs_resolution());
        assert!(!payment(&[requested(), attempted(), completed("po_1")]).needs_resolution());
        assert!(!payment(&[requested(), attempted(), failed("account closed")]).needs_resolution());
    }

    #[test]
    fn a_repeated_or_late_timeout_changes_nothing() {
        let histories = [
            vec![requested(), attempted(), unknown()],
            vec![requested(), attempted(), completed("po_1")],
            vec![requested(), attempted(), failed("account closed")],
        ];
        for given in histories {
            assert_eq!(when(&given, timed_out()), Ok(vec![]));
        }
    }

    fn cancel() -> PaymentCommand {
        PaymentCommand::Cancel {
            payment_id: id(1),
            reason: "request-payment timed out".into(),
        }
    }

    fn cancelled() -> PaymentEvent {
        PaymentEvent::Cancelled {
            payment_id: id(1),
            reason: "request-payment timed out".into(),
        }
    }

    #[test]
    fn a_payment_never_requested_is_cancelled_and_then_never_requested() {
        assert_eq!(when(&[], cancel()), Ok(vec![cancelled()]));
        let given = [cancelled()];
        assert_eq!(payment(&given).status(), Some(Status::Cancelled));
        assert_eq!(when(&given, cancel()), Ok(vec![]), "a repeated cancel");
        assert_eq!(
            rejection(&given, PaymentCommand::Request(request())),
            "payment_cancelled"
        );
        for command in [attempt(), complete("po_1"), fail("declined"), timed_out()] {
            assert_eq!(rejection(&given, command), "payment_cancelled");
        }
    }

    #[test]
    fn a_requested_payment_is_never_cancelled_and_the_refusal_says_where_it_stands() {
        let cases = [
            (vec![requested()], "payment_in_flight"),
            (vec![requested(), attempted()], "payment_in_flight"),
            (
                vec![requested(), attempted(), unknown()],
                "payment_in_flight",
            ),
            (
                vec![requested(), attempted(), completed("po_1")],
                "payment_already_completed",
            ),
            (
                vec![requested(), attempted(), failed("declined")],
                "payment_already_failed",
            ),
        ];
        for (given, code) in cases {
            assert_eq!(rejection(&given, cancel()), code, "{given:?}");
        }
    }

    #[test]
    fn every_rejection_has_a_distinct_snake_case_code() {
        let errors = [
            Error::InvalidCurrency(String::new()),
            Error::InvalidAmount(0),
            Error::AlreadyRequested(id(1)),
            Error::NotFound(id(1)),
            Error::PayoutAlreadyAttempted(id(1)),
            Error::PayoutNotAttempted(id(1)),
            Error::AlreadyCompleted(id(1)),
            Error::AlreadyFailed(id(1)),
            Error::InFlight(id(1)),
            Error::Cancelled(id(1)),
            Error::ProviderReferenceMismatch {
                payment_id: id(1),
                recorded: String::new(),
                reported: String::new(),
            },
        ];
        let codes: BTreeSet<_> = errors.iter().map(Error::code).collect();
        assert_eq!(codes.len(), errors.len());
        for code in codes {
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
