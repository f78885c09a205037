//! The tracking domain, pure: a `TrackingEvent` aggregate per tracking id (recorded → confirmed or
//! failed) and `CampaignOrders`, the claims on a campaign's order ids, which rejects an order id
//! seen twice on one campaign as fraud, and a second refund of one order. [`decide_record`]
//! decides a recording against both; `refund::decide_refund` a refund, also against the
//! conversion it refunds.
//!
//! The fraud rule spans tracking events, so it cannot live in one tracking event's stream: the
//! consistency boundary is the claim of one order id on one campaign, a stream of its own, and a
//! recording loads only the claim of its own order id. Recording a conversion appends to the
//! tracking event's stream and to that claim's stream in one transaction, each with its expected
//! version, so two conversions racing for one order id cannot both win, while a campaign's other
//! conversions never wait for each other.
//!
//! Retries are the same command (ids come from the client), so a command whose effect is already
//! in place decides nothing (an empty event list) before checking any other rule.

mod refund;

use std::collections::BTreeMap;

use eventstore::Aggregate;
use serde::Serialize;
use uuid::Uuid;

pub use refund::decide_refund;
pub use schemas::values::Money;

/// Evidence of a click, lead, conversion or refund: what `Record` asks for and `Recorded`
/// records. The order is present exactly for a conversion and a refund; a refund's `refund_of`
/// names the conversion it refunds, found by its order id (never the client's). The tracking
/// event's wire record has no representation of its own in the domain.
pub use schemas::events::TrackingEventRecorded as Recording;
pub use schemas::values::{Order, TrackingKind};

/// Where a recorded tracking event stands in its saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Recorded,
    Confirmed,
    Failed { reason: String },
}

/// One click, lead, conversion or refund, identified by its tracking id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TrackingEvent {
    recorded: Option<(Recording, Status)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingCommand {
    Record(Recording),
    /// The tracking event's saga succeeded.
    Confirm {
        tracking_id: Uuid,
    },
    /// Compensation: the tracking event's saga failed.
    Fail {
        tracking_id: Uuid,
        reason: String,
    },
}

/// The events of a tracking event ("change" spares the name `TrackingEventEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingChange {
    Recorded(Recording),
    Confirmed {
        tracking_id: Uuid,
        campaign_id: Uuid,
        /// Absent on events stored before `tracking-events` v2 carried it.
        partner_id: Option<Uuid>,
    },
    Failed {
        tracking_id: Uuid,
        campaign_id: Uuid,
        /// Absent on events stored before `tracking-events` v2 carried it.
        partner_id: Option<Uuid>,
        reason: String,
    },
}

impl TrackingEvent {
    pub fn recording(&self) -> Option<&Recording> {
        self.recorded.as_ref().map(|(recording, _)| recording)
    }

    pub fn status(&self) -> Option<&Status> {
        self.recorded.as_ref().map(|(_, status)| status)
    }

    fn set_status(&mut self, status: Status) {
        if let Some((_, current)) = &mut self.recorded {
            *current = status;
        }
    }

    fn recorded(&self, tracking_id: Uuid) -> Result<(&Recording, &Status), Error> {
        self.recorded
            .as_ref()
            .map(|(recording, status)| (recording, status))
            .ok_or(Error::NotFound(tracking_id))
    }

    fn record(&self, recording: &Recording) -> Result<Vec<TrackingChange>, Error> {
        if let Some(existing) = self.recording() {
            return if existing == recording {
                Ok(vec![])
            } else {
                Err(Error::AlreadyRecorded(recording.tracking_id))
            };
        }
        match (recording.kind, &recording.order) {
            (TrackingKind::Conversion | TrackingKind::Refund, None) => {
                return Err(Error::OrderRequired);
            }
            (TrackingKind::Refund, Some(order)) if recording.refund_of.is_none() => {
                return Err(Error::OrderNotTracked {
                    campaign_id: recording.campaign_id,
                    order_id: order.order_id.clone(),
                });
            }
            (TrackingKind::Conversion | TrackingKind::Refund, Some(order)) => {
                validate_order(order)?
            }
            (kind @ (TrackingKind::Click | TrackingKind::Lead), Some(_)) => {
                return Err(Error::OrderNotAllowed(kind));
            }
            (TrackingKind::Click | TrackingKind::Lead, None) => {}
        }
        Ok(vec![TrackingChange::Recorded(recording.clone())])
    }
}

impl Aggregate for TrackingEvent {
    type Command = TrackingCommand;
    type Event = TrackingChange;
    type Error = Error;

    fn decide(&self, command: &TrackingCommand) -> Result<Vec<TrackingChange>, Error> {
        match command {
            TrackingCommand::Record(recording) => self.record(recording),
            TrackingCommand::Confirm { tracking_id } => {
                let (recording, status) = self.recorded(*tracking_id)?;
                match status {
                    Status::Recorded => Ok(vec![TrackingChange::Confirmed {
                        tracking_id: recording.tracking_id,
                        campaign_id: recording.campaign_id,
                        partner_id: Some(recording.partner_id),
                    }]),
                    Status::Confirmed => Ok(vec![]),
                    Status::Failed { .. } => Err(Error::AlreadyFailed(*tracking_id)),
                }
            }
            TrackingCommand::Fail {
                tracking_id,
                reason,
            } => {
                let (recording, status) = self.recorded(*tracking_id)?;
                match status {
                    Status::Recorded => Ok(vec![TrackingChange::Failed {
                        tracking_id: recording.tracking_id,
                        campaign_id: recording.campaign_id,
                        partner_id: Some(recording.partner_id),
                        reason: reason.clone(),
                    }]),
                    // The first reason stands; a repeated compensation only confirms it.
                    Status::Failed { .. } => Ok(vec![]),
                    Status::Confirmed => Err(Error::AlreadyConfirmed(*tracking_id)),
                }
            }
        }
    }

    fn apply(&mut self, event: &TrackingChange) {
        match event {
            TrackingChange::Recorded(recording) => {
                self.recorded = Some((recording.clone(), Status::Recorded));
            }
            TrackingChange::Confirmed { .. } => self.set_status(Status::Confirmed),
            TrackingChange::Failed { reason, .. } => self.set_status(Status::Failed {
                reason: reason.clone(),
            }),
        }
    }
}

fn validate_order(order: &Order) -> Result<(), Error> {
    if order.order_id.trim().is_empty() {
        return Err(Error::InvalidOrder("the order id is blank"));
    }
    if order.amount.amount < 0 {
        return Err(Error::InvalidOrder("the order amount is negative"));
    }
    let currency = &order.amount.currency;
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(Error::InvalidOrder(
            "the currency is not an ISO 4217 currency code",
        ));
    }
    Ok(())
}

/// The order ids claimed by a campaign's conversions, each with the tracking event that claimed
/// it first, and the refund of each refunded order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CampaignOrders {
    claimed: BTreeMap<String, Uuid>,
    refunded: BTreeMap<String, Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignOrdersCommand {
    ClaimOrder {
        campaign_id: Uuid,
        order_id: String,
        tracking_id: Uuid,
    },
    /// A refund of the order, by the tracking event `tracking_id`; one per order, unless the
    /// one before failed (`failed_refund`: its saga could not take the order back).
    RefundOrder {
        campaign_id: Uuid,
        order_id: String,
        tracking_id: Uuid,
        failed_refund: Option<Uuid>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignOrdersEvent {
    OrderClaimed {
        campaign_id: Uuid,
        order_id: String,
        tracking_id: Uuid,
    },
    OrderRefunded {
        campaign_id: Uuid,
        order_id: String,
        tracking_id: Uuid,
    },
}

impl CampaignOrders {
    /// The tracking event that claimed `order_id` on this campaign, if any.
    pub fn claimed_by(&self, order_id: &str) -> Option<Uuid> {
        self.claimed.get(order_id).copied()
    }

    /// The last refund of `order_id` on this campaign, if any.
    pub fn refunded_by(&self, order_id: &str) -> Option<Uuid> {
        self.refunded.get(order_id).copied()
    }
}

impl Aggregate for CampaignOrders {
    type Command = CampaignOrdersCommand;
    type Event = CampaignOrdersEvent;
    type Error = Error;

    fn decide(&self, command: &CampaignOrdersCommand) -> Result<Vec<CampaignOrdersEvent>, Error> {
        match command {
            CampaignOrdersCommand::ClaimOrder {
                campaign_id,
                order_id,
                tracking_id,
            } => match self.claimed_by(order_id) {
                Some(claimant) if claimant == *tracking_id => Ok(vec![]),
                Some(_) => Err(Error::DuplicateOrder {
                    campaign_id: *campaign_id,
                    order_id: order_id.clone(),
                }),
                None => Ok(vec![CampaignOrdersEvent::OrderClaimed {
                    campaign_id: *campaign_id,
                    order_id: order_id.clone(),
                    tracking_id: *tracking_id,
                }]),
            },
            CampaignOrdersCommand::RefundOrder {
                campaign_id,
                order_id,
                tracking_id,
                failed_refund,
            } => match self.refunded_by(order_id) {
                Some(refund) if refund == *tracking_id => Ok(vec![]),
                Some(refund) if Some(refund) != *failed_refund => Err(Error::AlreadyRefunded {
                    campaign_id: *campaign_id,
                    order_id: order_id.clone(),
                }),
                Some(_) | None => Ok(vec![CampaignOrdersEvent::OrderRefunded {
                    campaign_id: *campaign_id,
                    order_id: order_id.clone(),
                    tracking_id: *tracking_id,
                }]),
            },
        }
    }

    fn apply(&mut self, event: &CampaignOrdersEvent) {
        match event {
            CampaignOrdersEvent::OrderClaimed {
                order_id,
                tracking_id,
                ..
            } => {
                self.claimed.insert(order_id.clone(), *tracking_id);
            }
            CampaignOrdersEvent::OrderRefunded {
                order_id,
                tracking_id,
                ..
            } => {
                self.refunded.insert(order_id.clone(), *tracking_id);
            }
        }
    }
}

/// What recording one tracking event appends: to the tracking event's stream, and to its
/// campaign's orders stream when it is a new conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDecision {
    pub tracking: Vec<TrackingChange>,
    pub orders: Vec<CampaignOrdersEvent>,
}

/// Decides `Record` against the tracking event and its campaign's orders: both streams change, or
/// neither. A retried recording changes neither, without looking at the orders again.
pub fn decide_record(
    tracking_event: &TrackingEvent,
    campaign_orders: &CampaignOrders,
    recording: &Recording,
) -> Result<RecordDecision, Error> {
    let tracking = tracking_event.decide(&TrackingCommand::Record(recording.clone()))?;
    let orders = match &recording.order {
        Some(order) if !tracking.is_empty() => {
            campaign_orders.decide(&CampaignOrdersCommand::ClaimOrder {
                campaign_id: recording.campaign_id,
                order_id: order.order_id.clone(),
                tracking_id: recording.tracking_id,
            })?
        }
        Some(_) | None => vec![],
    };
    Ok(RecordDecision { tracking, orders })
}

/// Why a command was rejected; nothing changed. [`Error::code`] is the stable machine-readable
/// reason published in `CommandRejected`, the message its human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a conversion or refund needs an order")]
    OrderRequired,
    #[error("a {0:?} carries no order; only a conversion or refund does")]
    OrderNotAllowed(TrackingKind),
    #[error("invalid order: {0}")]
    InvalidOrder(&'static str),
    #[error("tracking event {0} was already recorded with other data")]
    AlreadyRecorded(Uuid),
    #[error("tracking event {0} was never recorded")]
    NotFound(Uuid),
    #[error("tracking event {0} is already confirmed")]
    AlreadyConfirmed(Uuid),
    #[error("tracking event {0} has already failed")]
    AlreadyFailed(Uuid),
    #[error("order {order_id:?} was already tracked on campaign {campaign_id}")]
    DuplicateOrder { campaign_id: Uuid, order_id: String },
    #[error("order {order_id:?} was never converted on campaign {campaign_id}")]
    OrderNotTracked { campaign_id: Uuid, order_id: String },
    #[error("order {order_id:?} cannot be refunded: {why}")]
    NotRefundable { order_id: String, why: &'static str },
    #[error("order {order_id:?} was already refunded on campaign {campaign_id}")]
    AlreadyRefunded { campaign_id: Uuid, order_id: String },
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::OrderRequired => "order_required",
            Error::OrderNotAllowed(_) => "order_not_allowed",
            Error::InvalidOrder(_) => "invalid_order",
            Error::AlreadyRecorded(_) => "tracking_event_already_recorded",
            Error::NotFound(_) => "tracking_event_not_found",
            Error::AlreadyConfirmed(_) => "tracking_event_already_confirmed",
            Error::AlreadyFailed(_) => "tracking_event_already_failed",
            Error::DuplicateOrder { .. } => "duplicate_order",
            Error::OrderNotTracked { .. } => "order_not_tracked",
            Error::NotRefundable { .. } => "order_not_refundable",
            Error::AlreadyRefunded { .. } => "order_already_refunded",
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

    // Given these events, when this command: the events decided, or the rejection('s code).
    fn when(
        given: &[TrackingChange],
        command: TrackingCommand,
    ) -> Result<Vec<TrackingChange>, Error> {
        TrackingEvent::given_when(given, &command)
    }

    fn rejection(given: &[TrackingChange], command: TrackingCommand) -> &'static str {
        when(given, command).expect_err("a rejection").code()
    }

    fn orders(given: &[CampaignOrdersEvent]) -> CampaignOrders {
        CampaignOrders::folded(given)
    }

    fn click(tracking: u128) -> Recording {
        Recording {
            tracking_id: id(tracking),
            campaign_id: id(10),
            partner_id: id(1),
            kind: TrackingKind::Click,
            order: None,
            occurred_at: 1_700_000_000_000_000,
            refund_of: None,
        }
    }

    fn order(order_id: &str) -> Order {
        Order {
            order_id: order_id.into(),
            amount: Money::new(4_999, "EUR"),
        }
    }

    fn conversion(tracking: u128, order_id: &str) -> Recording {
        Recording {
            kind: TrackingKind::Conversion,
            order: Some(order(order_id)),
            ..click(tracking)
        }
    }

    fn recorded() -> TrackingChange {
        TrackingChange::Recorded(click(1))
    }

    fn confirmed() -> TrackingChange {
        TrackingChange::Confirmed {
            tracking_id: id(1),
            campaign_id: id(10),
            partner_id: Some(id(1)),
        }
    }

    fn failed(reason: &str) -> TrackingChange {
        TrackingChange::Failed {
            tracking_id: id(1),
            campaign_id: id(10),
            partner_id: Some(id(1)),
            reason: reason.into(),
        }
    }

    fn confirm() -> TrackingCommand {
        TrackingCommand::Confirm { tracking_id: id(1) }
    }

    fn fail(reason: &str) -> TrackingCommand {
        TrackingCommand::Fail {
            tracking_id: id(1),
            reason: reason.into(),
        }
    }

    fn claimed(order_id: &str, tracking: u128) -> CampaignOrdersEvent {
        CampaignOrdersEvent::OrderClaimed {
            campaign_id: id(10),
            order_id: order_id.into(),
            tracking_id: id(tracking),
        }
    }

    #[test]
    fn a_click_is_recorded() {
        assert_eq!(
            when(&[], TrackingCommand::Record(click(1))),
            Ok(vec![recorded()])
        );
        let lead = Recording {
            kind: TrackingKind::Lead,
            ..click(1)
        };
        assert_eq!(
            when(&[], TrackingCommand::Record(lead.clone())),
            Ok(vec![TrackingChange::Recorded(lead)])
        );
    }

    #[test]
    fn recording_the_same_tracking_event_again_is_a_no_op() {
        assert_eq!(
            when(&[recorded()], TrackingCommand::Record(click(1))),
            Ok(vec![])
        );
    }

    #[test]
    fn a_retried_recording_is_a_no_op_in_any_state() {
        for state in [confirmed(), failed("budget exhausted")] {
            assert_eq!(
                when(&[recorded(), state], TrackingCommand::Record(click(1))),
                Ok(vec![])
            );
        }
    }

    #[test]
    fn recording_a_tracking_id_again_with_other_data_is_rejected() {
        let other = Recording {
            partner_id: id(2),
            ..click(1)
        };
        assert_eq!(
            rejection(&[recorded()], TrackingCommand::Record(other)),
            "tracking_event_already_recorded"
        );
    }

    #[test]
    fn a_conversion_needs_an_order() {
        let without_order = Recording {
            kind: TrackingKind::Conversion,
            ..click(1)
        };
        assert_eq!(
            rejection(&[], TrackingCommand::Record(without_order)),
            "order_required"
        );
    }

    #[test]
    fn a_click_or_lead_carries_no_order() {
        for kind in [TrackingKind::Click, TrackingKind::Lead] {
            let with_order = Recording {
                kind,
                ..conversion(1, "A-1")
            };
            assert_eq!(
                rejection(&[], TrackingCommand::Record(with_order)),
                "order_not_allowed"
            );
        }
    }

    #[test]
    fn an_order_with_a_blank_id_negative_amount_or_bad_currency_is_rejected() {
        let invalid = [
            order(" "),
            Order {
                amount: Money::new(-1, "EUR"),
                ..order("A-1")
            },
            Order {
                amount: Money::new(1, "EURO"),
                ..order("A-1")
            },
        ];
        for order in invalid {
            let recording = Recording {
                order: Some(order),
                ..conversion(1, "A-1")
            };
            assert_eq!(
                rejection(&[], TrackingCommand::Record(recording)),
                "invalid_order"
            );
        }
    }

    #[test]
    fn a_recorded_tracking_event_is_confirmed_once() {
        assert_eq!(when(&[recorded()], confirm()), Ok(vec![confirmed()]));
        assert_eq!(when(&[recorded(), confirmed()], confirm()), Ok(vec![]));
    }

    #[test]
    fn a_recorded_tracking_event_fails_once_and_keeps_its_first_reason() {
        assert_eq!(
            when(&[recorded()], fail("budget exhausted")),
            Ok(vec![failed("budget exhausted")])
        );
        assert_eq!(
            when(&[recorded(), failed("budget exhausted")], fail("timed out")),
            Ok(vec![])
        );
        let mut tracking_event = TrackingEvent::default();
        [recorded(), failed("budget exhausted")]
            .iter()
            .for_each(|event| tracking_event.apply(event));
        assert_eq!(
            tracking_event.status(),
            Some(&Status::Failed {
                reason: "budget exhausted".into()
            })
        );
    }

    #[test]
    fn a_failed_tracking_event_cannot_be_confirmed() {
        assert_eq!(
            rejection(&[recorded(), failed("budget exhausted")], confirm()),
            "tracking_event_already_failed"
        );
    }

    #[test]
    fn a_confirmed_tracking_event_cannot_fail() {
        assert_eq!(
            rejection(&[recorded(), confirmed()], fail("timed out")),
            "tracking_event_already_confirmed"
        );
    }

    #[test]
    fn confirming_or_failing_an_unknown_tracking_event_is_rejected() {
        assert_eq!(rejection(&[], confirm()), "tracking_event_not_found");
        assert_eq!(
            rejection(&[], fail("timed out")),
            "tracking_event_not_found"
        );
    }

    #[test]
    fn an_order_is_claimed_once_per_campaign() {
        let claim = |tracking| CampaignOrdersCommand::ClaimOrder {
            campaign_id: id(10),
            order_id: "A-1".into(),
            tracking_id: id(tracking),
        };
        assert_eq!(orders(&[]).decide(&claim(1)), Ok(vec![claimed("A-1", 1)]));
        assert_eq!(orders(&[claimed("A-1", 1)]).decide(&claim(1)), Ok(vec![]));
        assert_eq!(
            orders(&[claimed("A-1", 1)]).decide(&claim(2)),
            Err(Error::DuplicateOrder {
                campaign_id: id(10),
                order_id: "A-1".into(),
            })
        );
        assert_eq!(orders(&[claimed("A-1", 1)]).claimed_by("A-1"), Some(id(1)));
    }

    #[test]
    fn recording_a_conversion_claims_its_order() {
        let given = orders(&[claimed("A-1", 1)]);
        assert_eq!(
            decide_record(&TrackingEvent::default(), &given, &conversion(2, "A-2")),
            Ok(RecordDecision {
                tracking: vec![TrackingChange::Recorded(conversion(2, "A-2"))],
                orders: vec![claimed("A-2", 2)],
            })
        );
    }

    #[test]
    fn the_same_order_on_a_campaign_from_another_tracking_event_is_fraud() {
        let given = orders(&[claimed("A-1", 1)]);
        let error =
            decide_record(&TrackingEvent::default(), &given, &conversion(2, "A-1")).unwrap_err();
        assert_eq!(error.code(), "duplicate_order");
    }

    #[test]
    fn the_same_order_id_on_another_campaign_is_fine() {
        // Another campaign has its own orders stream, which has not seen the order.
        let other_campaign = Recording {
            campaign_id: id(11),
            ..conversion(2, "A-1")
        };
        let decision =
            decide_record(&TrackingEvent::default(), &orders(&[]), &other_campaign).unwrap();
        assert_eq!(decision.orders.len(), 1);
    }

    #[test]
    fn a_retried_conversion_changes_neither_stream() {
        let mut tracking_event = TrackingEvent::default();
        tracking_event.apply(&TrackingChange::Recorded(conversion(1, "A-1")));
        assert_eq!(
            decide_record(
                &tracking_event,
                &orders(&[claimed("A-1", 1)]),
                &conversion(1, "A-1")
            ),
            Ok(RecordDecision {
                tracking: vec![],
                orders: vec![],
            })
        );
    }

    #[test]
    fn recording_a_click_leaves_the_orders_alone() {
        assert_eq!(
            decide_record(&TrackingEvent::default(), &orders(&[]), &click(1)),
            Ok(RecordDecision {
                tracking: vec![recorded()],
                orders: vec![],
            })
        );
    }

    #[test]
    fn a_rejected_recording_claims_no_order() {
        let mut tracking_event = TrackingEvent::default();
        tracking_event.apply(&recorded());
        let error =
            decide_record(&tracking_event, &orders(&[]), &conversion(1, "A-1")).unwrap_err();
        assert_eq!(error.code(), "tracking_event_already_recorded");
    }

    #[test]
    fn every_rejection_has_a_distinct_snake_case_code() {
        let errors = [
            Error::OrderRequired,
            Error::OrderNotAllowed(TrackingKind::Click),
            Error::InvalidOrder(""),
            Error::AlreadyRecorded(id(1)),
            Error::NotFound(id(1)),
            Error::AlreadyConfirmed(id(1)),
            Error::AlreadyFailed(id(1)),
            Error::DuplicateOrder {
                campaign_id: id(1),
                order_id: String::new(),
            },
        ];
        let codes: BTreeSet<_> = errors.iter().map(Error::code).collect();
        assert_eq!(codes.len(), errors.len());
        for code in codes {
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
