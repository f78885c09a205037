//! One handler per command topic campaigns consumes; each runs in the transaction the consumer
//! runner opened (with the inbox record) and ends in `messaging::effects`.
//!
//! Every campaign command is decided on the campaign's stream as read in that transaction and
//! appended with that stream's version as the expected one, so two concurrent reservations on one
//! campaign (sagas key their commands by saga id, so they do run concurrently) never both spend
//! the same budget: the loser gets a conflict, which the runner retries on fresh state.
//!
//! A campaign's stream only grows (two events per saga it pays for): `state` keeps deciding on
//! it from folding the whole stream.

use crate::domain::{CampaignCommand, Error, Partner};
use crate::state::{self, CampaignCache};
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
use std::sync::Arc;
use uuid::Uuid;

/// A stream's state and version, folded from its events.
async fn load<S: Default>(
    tx: &mut PgConnection,
    stream_id: &str,
    apply: impl FnMut(&mut S, Stored),
) -> Result<(S, ExpectedVersion), HandlerError> {
    let (state, version) = fold(tx, stream_id, (S::default(), 0), apply).await?;
    Ok((state, expected(version)))
}

/// What an append after the stream's `version` expects (0: no stream yet).
fn expected(version: i64) -> ExpectedVersion {
    match version {
        0 => ExpectedVersion::NoStream,
        version => ExpectedVersion::Exact(version),
    }
}

/// Brings `state`, folded from the stream's events up to `version`, up to the stream's end.
pub(crate) async fn fold<S>(
    tx: &mut PgConnection,
    stream_id: &str,
    (mut state, version): (S, i64),
    mut apply: impl FnMut(&mut S, Stored),
) -> Result<(S, i64), HandlerError> {
    let events = eventstore::read_stream(tx, stream_id, version + 1, None).await?;
    for event in &events {
        let stored = wire::stored(event).map_err(|e| {
            HandlerError::Transient(format!("stored event {} undecodable: {e}", event.event_id))
        })?;
        if let Some(stored) = stored {
            apply(&mut state, stored);
        }
    }
    Ok((state, events.last().map_or(version, |e| e.version)))
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

/// Decides a command on its campaign's stream (`state`: how the campaign is loaded).
async fn on_campaign(
    tx: &mut PgConnection,
    props: &Properties,
    cache: &CampaignCache,
    campaign_id: Uuid,
    command: CampaignCommand,
) -> Result<(), HandlerError> {
    let loaded = state::load(tx, cache, campaign_id, command.reservation_id()).await?;
    let decision = loaded.campaign.decide(&command);
    let version = loaded.version;
    let decided = decision.as_deref().unwrap_or_default();
    state::decided(tx, cache, campaign_id, loaded, decided).await?;
    let stream_id = wire::campaign_stream(campaign_id);
    let stream = (stream_id.as_str(), "campaign", expected(version));
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
pub struct Creation(pub Arc<CampaignCache>);

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
            &self.0,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-partner-association`: lets a partner promote a campaign.
#[derive(Debug, Default)]
pub struct PartnerAssociation(pub Arc<CampaignCache>);

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
            &self.0,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-content-association`: attaches promotional content to a campaign.
#[derive(Debug, Default)]
pub struct ContentAssociation(pub Arc<CampaignCache>);

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
            &self.0,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-budget-reservation`: a saga's first step, holding one tracking event's commission
/// against the budget.
#[derive(Debug, Default)]
pub struct BudgetReservation(pub Arc<CampaignCache>);

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
            &self.0,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}

/// `campaign-budget-release`: compensation, giving a reservation's amount back to the budget.
#[derive(Debug, Default)]
pub struct BudgetRelease(pub Arc<CampaignCache>);

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
            &self.0,
            incoming.message.campaign_id,
            command,
        )
        .await
    }
}
