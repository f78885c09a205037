//! The flows, as definitions: each step's command, policy, undo and (for the payment) the
//! question that settles it. Ids are derived from the saga id, so a replay chooses them again; a
//! refund's from the saga of the order it refunds, whose commission, payment and reservation it
//! takes back.

use super::catalogue::{Catalogue, Definition, Pivot, Policy, StepDefinition};
use super::{Command, SagaData, SagaType, Step, TrackingKind};
use std::time::Duration;
use uuid::Uuid;

/// What the coordinator runs.
pub static CATALOGUE: Catalogue = Catalogue(&[
    &COMMISSION_ASSIGNMENT_V1,
    &ORDER_TO_PAYMENT_V1,
    &ORDER_REFUND_V1,
]);

/// Started by a recorded billable click or lead.
pub static COMMISSION_ASSIGNMENT_V1: Definition = Definition {
    saga_type: SagaType::CommissionAssignment,
    version: 1,
    steps: &[RESERVE_BUDGET, ASSIGN_COMMISSION, CONFIRM_TRACKING],
};

/// Started by a recorded conversion (an order).
pub static ORDER_TO_PAYMENT_V1: Definition = Definition {
    saga_type: SagaType::OrderToPayment,
    version: 1,
    steps: &[
        RESERVE_BUDGET,
        ASSIGN_COMMISSION,
        REQUEST_PAYMENT,
        CONFIRM_TRACKING,
    ],
};

const ASK: Policy = Policy {
    timeout: Duration::from_secs(10),
    attempts: 3,
};

pub const RESERVE_BUDGET: StepDefinition = StepDefinition {
    step: Step::ReserveBudget,
    policy: ASK,
    command: |saga, data| {
        Some(Command::ReserveBudget {
            reservation_id: saga.derived_id("reservation"),
            campaign_id: data.campaign_id,
            partner_id: data.partner_id,
            tracking_id: data.tracking_id,
            kind: data.kind,
            order_amount: data.order.as_ref().map(|o| o.amount.clone()),
            occurred_at: data.occurred_at,
        })
    },
    undo: Some(|saga, data, reason| {
        Some(Command::ReleaseBudget {
            reservation_id: saga.derived_id("reservation"),
            campaign_id: data.campaign_id,
            reason,
        })
    }),
    pivot: None,
};

/// The commission is what the reservation came to (campaigns applies the campaign's rule).
pub const ASSIGN_COMMISSION: StepDefinition = StepDefinition {
    step: Step::AssignCommission,
    policy: ASK,
    command: |saga, data| {
        Some(Command::AssignCommission {
            commission_id: saga.derived_id("commission"),
            campaign_id: data.campaign_id,
            partner_id: data.partner_id,
            tracking_id: data.tracking_id,
            amount: saga.amount.clone()?,
        })
    },
    undo: Some(|saga, _, reason| {
        Some(Command::ReverseCommission {
            commission_id: saga.derived_id("commission"),
            reason,
        })
    }),
    pivot: None,
};

/// The pivot: a payout that went out cannot be taken back, and one that went unanswered may
/// still go out, so the saga asks payments to cancel it unless it was made.
pub const REQUEST_PAYMENT: StepDefinition = StepDefinition {
    step: Step::RequestPayment,
    // The provider's own retries and resolution sit behind a payment: give it longer.
    policy: Policy {
        timeout: Duration::from_secs(60),
        attempts: 2,
    },
    command: |saga, data| {
        Some(Command::RequestPayment {
            payment_id: saga.derived_id("payment"),
            commission_id: saga.derived_id("commission"),
            partner_id: data.partner_id,
            campaign_id: data.campaign_id,
            amount: saga.amount.clone()?,
        })
    },
    undo: None,
    pivot: Some(Pivot {
        ask: |saga, _, reason| Command::CancelPayment {
            payment_id: saga.derived_id("payment"),
            reason,
        },
        cancelled: (
            "payment_cancelled",
            "cancelled after its request went unanswered, before any payout",
        ),
        never: &["payment_cancelled", "payment_already_failed"],
        happened: &["payment_already_completed"],
    }),
};

/// The last step: nothing after it can fail.
pub const CONFIRM_TRACKING: StepDefinition = StepDefinition {
    step: Step::ConfirmTracking,
    policy: ASK,
    command: |_, data| {
        Some(Command::ConfirmTracking {
            tracking_id: data.tracking_id,
        })
    },
    undo: None,
    pivot: None,
};

/// Started by a recorded refund of a converted order (a chargeback): the order's commission,
/// payout and budget are taken back.
pub static ORDER_REFUND_V1: Definition = Definition {
    saga_type: SagaType::OrderRefund,
    version: 1,
    steps: &[
        REVERSE_COMMISSION,
        CLAW_BACK,
        RELEASE_BUDGET,
        CONFIRM_TRACKING,
    ],
};

/// The id of what the refunded order's saga created (its `what`), derived as that saga did.
fn of_the_order(data: &SagaData, what: &str) -> Option<Uuid> {
    let order_saga = schemas::ids::saga_id_for(data.refund_of?);
    Some(Uuid::new_v5(&order_saga, what.as_bytes()))
}

/// A refund's steps are sent again, waiting longer each time, until they answer: a timeout never
/// gives one up, since its undo (on a topic of its own) could overtake the command still on its
/// way and be undone by it. Their services answer every one of them (none is refused for being
/// late), so an outage only delays the refund.
const UNTIL_ANSWERED: Policy = Policy {
    timeout: Duration::from_secs(10),
    attempts: u32::MAX,
};

fn refunded(data: &SagaData) -> String {
    let order = data.order.as_ref().map_or("", |o| o.order_id.as_str());
    format!("order {order} refunded")
}

/// Takes the order's commission back; undone by reinstating it as it was.
pub const REVERSE_COMMISSION: StepDefinition = StepDefinition {
    step: Step::ReverseCommission,
    policy: UNTIL_ANSWERED,
    command: |_, data| {
        Some(Command::ReverseCommission {
            commission_id: of_the_order(data, "commission")?,
            reason: refunded(data),
        })
    },
    undo: Some(|_, data, reason| {
        Some(Command::ReinstateCommission {
            commission_id: of_the_order(data, "commission")?,
            reason,
        })
    }),
    pivot: None,
};

/// Takes the order's payout back from the partner's balance, if it was paid (payments knows).
pub const CLAW_BACK: StepDefinition = StepDefinition {
    step: Step::ClawBack,
    policy: UNTIL_ANSWERED,
    command: |saga, data| {
        Some(Command::ClawBack {
            clawback_id: saga.derived_id("clawback"),
            payment_id: of_the_order(data, "payment")?,
            reason: refunded(data),
        })
    },
    undo: Some(|saga, data, reason| {
        Some(Command::CancelClawBack {
            clawback_id: saga.derived_id("clawback"),
            payment_id: of_the_order(data, "payment")?,
            reason,
        })
    }),
    pivot: None,
};

/// Gives the order's reserved budget back to the campaign; undone by reserving it again, as a
/// reservation of its own (which the campaign may refuse if its budget went meanwhile).
pub const RELEASE_BUDGET: StepDefinition = StepDefinition {
    step: Step::ReleaseBudget,
    policy: UNTIL_ANSWERED,
    command: |_, data| {
        Some(Command::ReleaseBudget {
            reservation_id: of_the_order(data, "reservation")?,
            campaign_id: data.campaign_id,
            reason: refunded(data),
        })
    },
    undo: Some(|saga, data, _| {
        Some(Command::ReserveBudget {
            reservation_id: saga.derived_id("reservation-restored"),
            campaign_id: data.campaign_id,
            partner_id: data.partner_id,
            tracking_id: data.refund_of?,
            kind: TrackingKind::Conversion,
            order_amount: data.order.as_ref().map(|o| o.amount.clone()),
            occurred_at: data.occurred_at,
        })
    }),
    pivot: None,
};
