//! The only place commissions' domain meets the wire: commands from Avro into domain commands, and
//! domain events into `commissions-events` records (which are also the event store's payloads)
//! and back. Upcasting happens here, by Avro schema resolution from a stored event's schema
//! version.

use crate::domain::{Assignment, CommissionCommand, CommissionEvent};
use eventstore::Aggregate;
use eventstore::RecordedEvent;
use schemas::commands::{AssignCommission, ReinstateCommission, ReverseCommission};
use schemas::events::{
    CommissionAssigned, CommissionReinstated, CommissionReversed, CommissionVoided,
    CommissionsEvent,
};

pub fn assign(command: &AssignCommission) -> CommissionCommand {
    CommissionCommand::Assign {
        commission_id: command.commission_id,
        campaign_id: command.campaign_id,
        partner_id: command.partner_id,
        tracking_id: command.tracking_id,
        rule: command.rule,
        order_amount: command.order_amount.clone(),
        currency: command.currency.clone(),
    }
}

pub fn reverse(command: &ReverseCommission) -> CommissionCommand {
    CommissionCommand::Reverse {
        commission_id: command.commission_id,
        reason: command.reason.clone(),
    }
}

pub fn reinstate(command: &ReinstateCommission) -> CommissionCommand {
    CommissionCommand::Reinstate {
        commission_id: command.commission_id,
        reason: command.reason.clone(),
    }
}

pub fn event(event: &CommissionEvent) -> CommissionsEvent {
    match event {
        CommissionEvent::Assigned(a) => CommissionsEvent::CommissionAssigned(CommissionAssigned {
            commission_id: a.commission_id,
            campaign_id: a.campaign_id,
            partner_id: a.partner_id,
            tracking_id: a.tracking_id,
            amount: a.amount.clone(),
        }),
        CommissionEvent::Reversed {
            commission_id,
            campaign_id,
            partner_id,
            amount,
            reason,
        } => CommissionsEvent::CommissionReversed(CommissionReversed {
            commission_id: *commission_id,
            campaign_id: *campaign_id,
            partner_id: *partner_id,
            amount: amount.clone(),
            reason: reason.clone(),
        }),
        CommissionEvent::Voided {
            commission_id,
            reason,
        } => CommissionsEvent::CommissionVoided(CommissionVoided {
            commission_id: *commission_id,
            reason: reason.clone(),
        }),
        CommissionEvent::Reinstated {
            commission_id,
            campaign_id,
            partner_id,
            amount,
            reason,
        } => CommissionsEvent::CommissionReinstated(CommissionReinstated {
            commission_id: *commission_id,
            campaign_id: *campaign_id,
            partner_id: *partner_id,
            amount: amount.clone(),
            reason: reason.clone(),
        }),
    }
}

/// A stored event as a domain event; replies (rejections) are never stored.
pub fn stored(event: &RecordedEvent) -> Result<Option<CommissionEvent>, schemas::Error> {
    Ok(
        match messaging::stored::decode::<CommissionsEvent>(event)? {
            CommissionsEvent::CommissionAssigned(a) => {
                Some(CommissionEvent::Assigned(Assignment {
                    commission_id: a.commission_id,
                    campaign_id: a.campaign_id,
                    partner_id: a.partner_id,
                    tracking_id: a.tracking_id,
                    amount: a.amount,
                }))
            }
            CommissionsEvent::CommissionReversed(r) => Some(CommissionEvent::Reversed {
                commission_id: r.commission_id,
                campaign_id: r.campaign_id,
                partner_id: r.partner_id,
                amount: r.amount,
                reason: r.reason,
            }),
            CommissionsEvent::CommissionVoided(v) => Some(CommissionEvent::Voided {
                commission_id: v.commission_id,
                reason: v.reason,
            }),
            CommissionsEvent::CommissionReinstated(r) => Some(CommissionEvent::Reinstated {
                commission_id: r.commission_id,
                campaign_id: r.campaign_id,
                partner_id: r.partner_id,
                amount: r.amount,
                reason: r.reason,
            }),
            CommissionsEvent::CommandRejected(_) | CommissionsEvent::CommandAlreadyApplied(_) => {
                None
            }
        },
    )
}

/// A commission's state, folded from its stream's events.
pub fn fold(events: &[RecordedEvent]) -> Option<serde_json::Value> {
    eventstore::api::fold_state(
        events,
        |event| stored(event).ok()?,
        crate::domain::Commission::apply,
    )
}

/// The stream of one commission.
pub fn commission_stream(commission_id: uuid::Uuid) -> String {
    format!("commission-{commission_id}")
}
