//! One handler per command topic campaigns consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.
//!
//! Every campaign command is decided on the campaign's stream as read in that transaction and
//! appended with that stream's version as the expected one, so two concurrent reservations on one
//! campaign (sagas key their commands by saga id, so they do run concurrently) never both spend
//! the same budget: the loser gets a conflict, which the runner retries on fresh state.

use crate::domain::{Campaign, CampaignCommand, Error, Partner};
use crate::wire::{self, Stored};
use eventstore::ExpectedVersion;
use messaging::Properties;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, StreamEvents};
use schemas::commands::{
    AssociateContent, AssociatePartner, CreateCampaign, RegisterPartner, ReleaseBudget,
    ReserveBudget,
};
use schemas::events::CampaignsEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// A stream's state and version, folded from its events.
async fn load<S: Default>(
    tx: &mut PgConnection,
    stream_id: &str,
    mut apply: impl FnMut(&mut S, Stored),
) -> Result<(S, ExpectedVersion), HandlerError> {
    let events = eventstore::read_stream(tx, stream_id, 1, None).await?;
    let mut state = S::default();
    for event in &events {
        let stored = wire::stored(event).map_err(|e| {
            HandlerError::Transient(format!("stored event {} undecodable: {e}", event.event_id))
        })?;
        if let Some(stored) = stored {
            apply(&mut state, stored);
        }
    }
    let version = events.last().map_or(ExpectedVersion::NoStream, |e| {
        ExpectedVersion::Exact(e.version)
    });
    Ok((state, version))
}

async fn reject(
    tx: &mut PgConnection,
    props: &Properties,
    aggregate: &str,
    error: &Error,
) -> Result<(), HandlerError> {
    effects::commit_rejection(
        tx,
        props,
        aggregate,
        (error.code(), &error.to_string()),
        CampaignsEvent::CommandRejected,
    )
    .await
}

/// Commits what a decision came to: a rejection, a reply that nothing changed, or the events on
/// the stream at the version they were decided on.
async fn commit<E>(
    tx: &mut PgConnection,
    props: &Properties,
    key: &str,
    stream: (&str, &str, ExpectedVersion),
    decision: Result<Vec<E>, Error>,
    to_wire: fn(&E) -> CampaignsEvent,
) -> Result<(), HandlerError> {
    match decision {
        Err(error) => reject(tx, props, key, &error).await,
        Ok(events) if events.is_empty() => {
            effects::commit_already_applied(tx, props, key, CampaignsEvent::CommandAlreadyApplied)
                .await
        }
        Ok(events) => {
            let (stream_id, stream_type, expected) = stream;
            let streams = [StreamEvents {
                stream_id,
                stream_type,
                expected,
                events: events.iter().map(to_wire).collect(),
            }];
            effects::commit_events(tx, props, key, &streams).await
        }
    }
}

/// Decides a command on its campaign's stream.
async fn on_campaign(
    tx: &mut PgConnection,
    props: &Properties,
    campaign_id: Uuid,
    command: CampaignCommand,
) -> Result<(), HandlerError> {
    let stream_id = wire::campaign_stream(campaign_id);
    let (campaign, version) = load(tx, &stream_id, |state: &mut Campaign, stored| {
        if let Stored::Campaign(event) = stored {
            state.apply(&event);
        }
    })
    .await?;
    let decision = campaign.decide(&command);
    let stream = (stream_id.as_str(), "campaign", version);
    let key = campaign_id.to_string();
    commit(tx, props, &key, stream, decision, wire::campaign_event).await
}

/// `campaigns-partner-registration`: registers a partner once.
#[derive(Debug, Default)]
pub struct Registration;

impl Handler for Registration {
    type Message = RegisterPartner;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<RegisterPartner>,
    ) -> Result<(), HandlerError> {
        let partner_id = incoming.message.partner_id;
        let stream_id = wire::partner_stream(partner_id);
        let (partner, version) = load(tx, &stream_id, |state: &mut Partner, stored| {
            if let Stored::Partner(event) = stored {
                state.apply(&event);
            }
        })
        .await?;
        let decision = partner.decide(&wire::register(&incoming.message));
        let stream = (stream_id.as_str(), "partner", version);
        let key = partner_id.to_string();
        commit(
            tx,
            &incoming.properties,
            &key,
            stream,
            decision,
            wire::partner_event,
        )
        .await
    }
}

/// `campaign-creation`: creates an advertiser's campaign.
#[derive(Debug, Default)]
pub struct Creation;

impl Handler for Creation {
    type Message = CreateCampaign;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<CreateCampaign>,
    ) -> Result<(), HandlerError> {
        let command = wire::create(&incoming.message);
        on_campaign(
            tx,
            &incoming.properties,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-partner-association`: lets a partner promote a campaign.
#[derive(Debug, Default)]
pub struct PartnerAssociation;

impl Handler for PartnerAssociation {
    type Message = AssociatePartner;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<AssociatePartner>,
    ) -> Result<(), HandlerError> {
        let command = wire::associate_partner(&incoming.message);
        on_campaign(
            tx,
            &incoming.properties,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-content-association`: attaches promotional content to a campaign.
#[derive(Debug, Default)]
pub struct ContentAssociation;

impl Handler for ContentAssociation {
    type Message = AssociateContent;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<AssociateContent>,
    ) -> Result<(), HandlerError> {
        let command = wire::associate_content(&incoming.message);
        on_campaign(
            tx,
            &incoming.properties,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-budget-reservation`: a saga's first step, holding one tracking event's commission
/// against the budget.
#[derive(Debug, Default)]
pub struct BudgetReservation;

impl Handler for BudgetReservation {
    type Message = ReserveBudget;

    /// Reservations come keyed by their sagas and all write their campaign's stream: one lane
    /// per campaign, so that they queue instead of racing.
    fn lane(&self, message: &ReserveBudget, _key: &str) -> String {
        message.campaign_id.to_string()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<ReserveBudget>,
    ) -> Result<(), HandlerError> {
        let command = wire::reserve_budget(&incoming.message);
        on_campaign(
            tx,
            &incoming.properties,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-budget-release`: compensation, giving a reservation's amount back to the budget.
#[derive(Debug, Default)]
pub struct BudgetRelease;

impl Handler for BudgetRelease {
    type Message = ReleaseBudget;

    fn lane(&self, message: &ReleaseBudget, _key: &str) -> String {
        message.campaign_id.to_string()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<ReleaseBudget>,
    ) -> Result<(), HandlerError> {
        let command = wire::release_budget(&incoming.message);
        on_campaign(
            tx,
            &incoming.properties,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}
