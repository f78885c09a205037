//! The only place the campaigns domain meets the wire: commands from Avro into domain commands,
//! and domain events into `campaigns-events` records (which are also the event store's payloads)
//! and back. Upcasting happens here, by Avro schema resolution from a stored event's schema
//! version.

use crate::domain::{
    CampaignCommand, CampaignDetails, CampaignEvent, CommissionRule, Content, ContentKind,
    PartnerCommand, PartnerEvent, PartnerRegistration,
};
use eventstore::Aggregate;
use eventstore::RecordedEvent;
use schemas::commands;
use schemas::events::{
    BudgetReleased, BudgetReserved, CampaignCreated, CampaignsEvent, ContentAssociated,
    PartnerAssociated, PartnerRegistered,
};
use schemas::values;
use uuid::Uuid;

/// An event of one of the campaigns streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Partner(PartnerEvent),
    Campaign(CampaignEvent),
}

/// A partner's or a campaign's state, folded from its stream's events: what the service decides
/// on (a campaign's reservations aside: they grow with its orders).
pub fn fold(events: &[RecordedEvent]) -> Option<serde_json::Value> {
    use crate::domain::{Campaign, Partner};
    use eventstore::api::fold_state;
    let partner = |event: &RecordedEvent| match stored(event).ok()?? {
        Stored::Partner(event) => Some(event),
        Stored::Campaign(_) => None,
    };
    let campaign = |event: &RecordedEvent| match stored(event).ok()?? {
        Stored::Campaign(event) => Some(event),
        Stored::Partner(_) => None,
    };
    match stored(events.first()?).ok()?? {
        Stored::Partner(_) => fold_state(events, partner, Partner::apply),
        Stored::Campaign(_) => fold_state(events, campaign, Campaign::apply),
    }
}

/// The stream of one partner.
pub fn partner_stream(partner_id: Uuid) -> String {
    format!("partner-{partner_id}")
}

/// The stream of one campaign: its details, partners, content and budget reservations.
pub fn campaign_stream(campaign_id: Uuid) -> String {
    format!("campaign-{campaign_id}")
}

pub fn register(command: &commands::RegisterPartner) -> PartnerCommand {
    PartnerCommand::Register(PartnerRegistration {
        partner_id: command.partner_id,
        name: command.name.clone(),
        email: command.email.clone(),
        payout_account: command.payout_account.clone(),
    })
}

pub fn create(command: &commands::CreateCampaign) -> CampaignCommand {
    CampaignCommand::Create(CampaignDetails {
        campaign_id: command.campaign_id,
        advertiser_id: command.advertiser_id,
        name: command.name.clone(),
        budget: command.budget.clone(),
        commission_rule: rule(command.commission_rule),
        valid_from: command.valid_from,
        valid_until: command.valid_until,
    })
}

pub fn associate_partner(command: &commands::AssociatePartner) -> CampaignCommand {
    CampaignCommand::AssociatePartner {
        campaign_id: command.campaign_id,
        partner_id: command.partner_id,
    }
}

pub fn associate_content(command: &commands::AssociateContent) -> CampaignCommand {
    CampaignCommand::AssociateContent {
        campaign_id: command.campaign_id,
        content: Content {
            content_id: command.content_id,
            kind: content_kind(command.kind),
            url: command.url.clone(),
            title: command.title.clone(),
            tags: command.tags.clone(),
        },
    }
}

/// The reservation's `occurred_at` (when the tracked event happened) is the instant the campaign
/// must be active at.
pub fn reserve_budget(command: &commands::ReserveBudget) -> CampaignCommand {
    CampaignCommand::ReserveBudget {
        reservation_id: command.reservation_id,
        campaign_id: command.campaign_id,
        partner_id: command.partner_id,
        tracking_id: command.tracking_id,
        kind: command.kind,
        order_amount: command.order_amount.clone(),
        at: command.occurred_at,
    }
}

pub fn release_budget(command: &commands::ReleaseBudget) -> CampaignCommand {
    CampaignCommand::ReleaseBudget {
        reservation_id: command.reservation_id,
        campaign_id: command.campaign_id,
        reason: command.reason.clone(),
    }
}

fn rule(rule: values::CommissionRule) -> CommissionRule {
    match rule {
        values::CommissionRule::Fixed { amount } => CommissionRule::Fixed { amount },
        values::CommissionRule::Percent { basis_points } => {
            CommissionRule::Percent { basis_points }
        }
    }
}

fn wire_rule(rule: CommissionRule) -> values::CommissionRule {
    match rule {
        CommissionRule::Fixed { amount } => values::CommissionRule::Fixed { amount },
        CommissionRule::Percent { basis_points } => {
            values::CommissionRule::Percent { basis_points }
        }
    }
}

fn content_kind(kind: values::ContentKind) -> ContentKind {
    match kind {
        values::ContentKind::Banner => ContentKind::Banner,
        values::ContentKind::Link => ContentKind::Link,
        values::ContentKind::Text => ContentKind::Text,
        values::ContentKind::Video => ContentKind::Video,
    }
}

fn wire_content_kind(kind: ContentKind) -> values::ContentKind {
    match kind {
        ContentKind::Banner => values::ContentKind::Banner,
        ContentKind::Link => values::ContentKind::Link,
        ContentKind::Text => values::ContentKind::Text,
        ContentKind::Video => values::ContentKind::Video,
    }
}

pub fn partner_event(event: &PartnerEvent) -> CampaignsEvent {
    match event {
        PartnerEvent::Registered(r) => CampaignsEvent::PartnerRegistered(PartnerRegistered {
            partner_id: r.partner_id,
            name: r.name.clone(),
            email: r.email.clone(),
            payout_account: r.payout_account.clone(),
        }),
    }
}

pub fn campaign_event(event: &CampaignEvent) -> CampaignsEvent {
    match event {
        CampaignEvent::Created(d) => CampaignsEvent::CampaignCreated(CampaignCreated {
            campaign_id: d.campaign_id,
            advertiser_id: d.advertiser_id,
            name: d.name.clone(),
            budget: d.budget.clone(),
            commission_rule: wire_rule(d.commission_rule),
            valid_from: d.valid_from,
            valid_until: d.valid_until,
        }),
        CampaignEvent::PartnerAssociated {
            campaign_id,
            partner_id,
        } => CampaignsEvent::PartnerAssociated(PartnerAssociated {
            campaign_id: *campaign_id,
            partner_id: *partner_id,
        }),
        CampaignEvent::ContentAssociated {
            campaign_id,
            content,
        } => CampaignsEvent::ContentAssociated(ContentAssociated {
            campaign_id: *campaign_id,
            content_id: content.content_id,
            kind: wire_content_kind(content.kind),
            url: content.url.clone(),
            title: content.title.clone(),
            tags: content.tags.clone(),
        }),
        CampaignEvent::BudgetReserved {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount,
        } => CampaignsEvent::BudgetReserved(BudgetReserved {
            reservation_id: *reservation_id,
            campaign_id: *campaign_id,
            partner_id: *partner_id,
            tracking_id: *tracking_id,
            amount: amount.clone(),
        }),
        CampaignEvent::BudgetReleased {
            reservation_id,
            campaign_id,
            amount,
            reason,
        } => CampaignsEvent::BudgetReleased(BudgetReleased {
            reservation_id: *reservation_id,
            campaign_id: *campaign_id,
            amount: amount.clone(),
            reason: reason.clone(),
        }),
    }
}

/// A stored event as a domain event; replies (rejections) are never stored.
pub fn stored(event: &RecordedEvent) -> Result<Option<Stored>, schemas::Error> {
    Ok(match messaging::stored::decode::<CampaignsEvent>(event)? {
        CampaignsEvent::PartnerRegistered(r) => Some(Stored::Partner(PartnerEvent::Registered(
            PartnerRegistration {
                partner_id: r.partner_id,
                name: r.name,
                email: r.email,
                payout_account: r.payout_account,
            },
        ))),
        CampaignsEvent::CampaignCreated(c) => {
            Some(Stored::Campaign(CampaignEvent::Created(CampaignDetails {
                campaign_id: c.campaign_id,
                advertiser_id: c.advertiser_id,
                name: c.name,
                budget: c.budget.clone(),
                commission_rule: rule(c.commission_rule),
                valid_from: c.valid_from,
                valid_until: c.valid_until,
            })))
        }
        CampaignsEvent::PartnerAssociated(a) => {
            Some(Stored::Campaign(CampaignEvent::PartnerAssociated {
                campaign_id: a.campaign_id,
                partner_id: a.partner_id,
            }))
        }
        CampaignsEvent::ContentAssociated(a) => {
            Some(Stored::Campaign(CampaignEvent::ContentAssociated {
                campaign_id: a.campaign_id,
                content: Content {
                    content_id: a.content_id,
                    kind: content_kind(a.kind),
                    url: a.url,
                    title: a.title,
                    tags: a.tags,
                },
            }))
        }
        CampaignsEvent::BudgetReserved(r) => {
            Some(Stored::Campaign(CampaignEvent::BudgetReserved {
                reservation_id: r.reservation_id,
                campaign_id: r.campaign_id,
                partner_id: r.partner_id,
                tracking_id: r.tracking_id,
                amount: r.amount.clone(),
            }))
        }
        CampaignsEvent::BudgetReleased(r) => {
            Some(Stored::Campaign(CampaignEvent::BudgetReleased {
                reservation_id: r.reservation_id,
                campaign_id: r.campaign_id,
                amount: r.amount.clone(),
                reason: r.reason,
            }))
        }
        CampaignsEvent::CommandRejected(_) | CampaignsEvent::CommandAlreadyApplied(_) => None,
    })
}
