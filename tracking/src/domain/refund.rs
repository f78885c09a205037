//! A refund (a chargeback) of a converted order: recorded as a tracking event of its own, which
//! starts the order-refund saga. It names the order by its id; the campaign's order claim says
//! which conversion tracked it, and that conversion must have completed its saga (its commission
//! assigned and paid), for the same partner and the whole order. One refund per order: the claim
//! records it, so two refunds racing for one order cannot both win; once a refund's saga failed
//! (it could not take the order back), the order can be refunded again.

use super::{
    CampaignOrders, CampaignOrdersCommand, Error, RecordDecision, Recording, Status,
    TrackingCommand, TrackingEvent,
};
use eventstore::Aggregate;

/// Decides a refund's recording against its order's claim, the conversion the claim names and
/// the order's last refund before this one (`conversion`, `last_refund`: those tracking events,
/// as loaded; default when there is none). A retried refund changes nothing.
pub fn decide_refund(
    refund: &TrackingEvent,
    orders: &CampaignOrders,
    (conversion, last_refund): (&TrackingEvent, &TrackingEvent),
    recording: &Recording,
) -> Result<RecordDecision, Error> {
    let order = recording.order.as_ref().ok_or(Error::OrderRequired)?;
    let not_tracked = || Error::OrderNotTracked {
        campaign_id: recording.campaign_id,
        order_id: order.order_id.clone(),
    };
    let converted = orders.claimed_by(&order.order_id).ok_or_else(not_tracked)?;
    let recording = Recording {
        refund_of: Some(converted),
        ..recording.clone()
    };
    let tracking = refund.decide(&TrackingCommand::Record(recording.clone()))?;
    if tracking.is_empty() {
        return Ok(RecordDecision {
            tracking,
            orders: vec![],
        });
    }
    let not_refundable = |why| Error::NotRefundable {
        order_id: order.order_id.clone(),
        why,
    };
    let (Some(conversion), Some(status)) = (conversion.recording(), conversion.status()) else {
        return Err(not_tracked());
    };
    match status {
        Status::Confirmed => {}
        Status::Recorded => return Err(not_refundable("its conversion is still being processed")),
        Status::Failed { .. } => {
            return Err(not_refundable(
                "its conversion failed: nothing was paid for it",
            ));
        }
    }
    if conversion.partner_id != recording.partner_id {
        return Err(not_refundable("the conversion credited another partner"));
    }
    if conversion.order.as_ref() != Some(order) {
        return Err(not_refundable(
            "a refund is of the whole order: its amount must be the order's",
        ));
    }
    let failed_refund = match (last_refund.recording(), last_refund.status()) {
        (Some(last), Some(Status::Failed { .. })) => Some(last.tracking_id),
        _ => None,
    };
    let orders = orders.decide(&CampaignOrdersCommand::RefundOrder {
        campaign_id: recording.campaign_id,
        order_id: order.order_id.clone(),
        tracking_id: recording.tracking_id,
        failed_refund,
    })?;
    Ok(RecordDecision { tracking, orders })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignOrdersEvent, Money, Order, TrackingChange, TrackingKind};
    use uuid::Uuid;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn order(amount: i64) -> Order {
        Order {
            order_id: "A-1".into(),
            amount: Money::new(amount, "EUR"),
        }
    }

    fn conversion() -> Recording {
        Recording {
            tracking_id: id(1),
            campaign_id: id(10),
            partner_id: id(20),
            kind: TrackingKind::Conversion,
            order: Some(order(4_999)),
            occurred_at: 1_700_000_000_000_000,
            refund_of: None,
        }
    }

    fn refund(tracking: u128) -> Recording {
        Recording {
            tracking_id: id(tracking),
            kind: TrackingKind::Refund,
            occurred_at: 1_700_000_100_000_000,
            ..conversion()
        }
    }

    /// The conversion with its saga's outcome, and the campaign's claims on its order.
    fn converted(outcome: Option<TrackingChange>) -> (TrackingEvent, CampaignOrders) {
        let mut event = TrackingEvent::default();
        event.apply(&TrackingChange::Recorded(conversion()));
        if let Some(outcome) = outcome {
            event.apply(&outcome);
        }
        let mut orders = CampaignOrders::default();
        orders.apply(&CampaignOrdersEvent::OrderClaimed {
            campaign_id: id(10),
            order_id: "A-1".into(),
            tracking_id: id(1),
        });
        (event, orders)
    }

    fn confirmed() -> TrackingChange {
        TrackingChange::Confirmed {
            tracking_id: id(1),
            campaign_id: id(10),
            partner_id: Some(id(20)),
        }
    }

    fn rejection(
        conversion: &TrackingEvent,
        orders: &CampaignOrders,
        recording: &Recording,
    ) -> &'static str {
        match decide_refund(
            &TrackingEvent::default(),
            orders,
            (conversion, &TrackingEvent::default()),
            recording,
        ) {
            Ok(decision) => panic!("expected a rejection, decided {decision:?}"),
            Err(error) => error.code(),
        }
    }

    #[test]
    fn a_refund_of_a_confirmed_conversion_names_it_and_claims_the_refund() {
        let (conversion, orders) = converted(Some(confirmed()));
        let decision = decide_refund(
            &TrackingEvent::default(),
            &orders,
            (&conversion, &TrackingEvent::default()),
            &refund(2),
        )
        .unwrap();
        let recorded = Recording {
            refund_of: Some(id(1)),
            ..refund(2)
        };
        assert_eq!(
            decision.tracking,
            [TrackingChange::Recorded(recorded.clone())]
        );
        assert_eq!(
            decision.orders,
            [CampaignOrdersEvent::OrderRefunded {
                campaign_id: id(10),
                order_id: "A-1".into(),
                tracking_id: id(2),
            }]
        );

        // Retried: nothing changes, even once the refund is claimed.
        let mut refunded = TrackingEvent::default();
        refunded.apply(&decision.tracking[0]);
        let mut claimed = orders.clone();
        claimed.apply(&decision.orders[0]);
        let again =
            decide_refund(&refunded, &claimed, (&conversion, &refunded), &refund(2)).unwrap();
        assert!(again.tracking.is_empty() && again.orders.is_empty());

        // A second refund of the order is refused, unless the first one's saga failed.
        assert_eq!(
            rejection(&conversion, &claimed, &refund(3)),
            "order_already_refunded"
        );
        refunded.apply(&TrackingChange::Failed {
            tracking_id: id(2),
            campaign_id: id(10),
            partner_id: Some(id(20)),
            reason: "release-budget rejected".into(),
        });
        let again = decide_refund(
            &TrackingEvent::default(),
            &claimed,
            (&conversion, &refunded),
            &refund(3),
        )
        .unwrap();
        assert_eq!(
            again.orders,
            [CampaignOrdersEvent::OrderRefunded {
                campaign_id: id(10),
                order_id: "A-1".into(),
                tracking_id: id(3),
            }]
        );
    }

    #[test]
    fn only_a_converted_order_whose_saga_completed_is_refunded_whole_for_its_partner() {
        let (pending, orders) = converted(None);
        assert_eq!(
            rejection(&pending, &orders, &refund(2)),
            "order_not_refundable"
        );
        let failed = TrackingChange::Failed {
            tracking_id: id(1),
            campaign_id: id(10),
            partner_id: Some(id(20)),
            reason: "budget exhausted".into(),
        };
        let (failed, orders) = converted(Some(failed));
        assert_eq!(
            rejection(&failed, &orders, &refund(2)),
            "order_not_refundable"
        );

        let (conversion, orders) = converted(Some(confirmed()));
        let partial = Recording {
            order: Some(order(1_000)),
            ..refund(2)
        };
        assert_eq!(
            rejection(&conversion, &orders, &partial),
            "order_not_refundable"
        );
        let other_partner = Recording {
            partner_id: id(21),
            ..refund(2)
        };
        assert_eq!(
            rejection(&conversion, &orders, &other_partner),
            "order_not_refundable"
        );
        let unknown = Recording {
            order: Some(Order {
                order_id: "A-2".into(),
                ..order(4_999)
            }),
            ..refund(2)
        };
        assert_eq!(
            rejection(&conversion, &orders, &unknown),
            "order_not_tracked"
        );
        let no_order = Recording {
            order: None,
            ..refund(2)
        };
        assert_eq!(rejection(&conversion, &orders, &no_order), "order_required");
    }

    #[test]
    fn a_refund_recorded_without_its_conversion_is_refused() {
        let event = TrackingEvent::default();
        let decided = event.decide(&TrackingCommand::Record(refund(2)));
        assert_eq!(decided.map_err(|e| e.code()), Err("order_not_tracked"));
    }
}
