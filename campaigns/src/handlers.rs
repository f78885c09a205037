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
use eventstore::Aggregate;
use eventstore::ExpectedVersion;
use messaging::Properties;
use messaging::consume::{Handler, HandlerError, Incoming};
use messaging::effects::{self, Replies, StreamEvents};
use schemas::Message;
use schemas::commands::{
    AssociateContent, AssociatePartner, CreateCampaign, RegisterPartner, ReleaseBudget,
    ReserveBudget,
};
use schemas::events::CampaignsEvent;
use serde::Serialize;
use sqlx::PgConnection;
use std::marker::PhantomData;
use std::sync::Arc;

const REPLIES: Replies<CampaignsEvent> = Replies {
    rejected: CampaignsEvent::CommandRejected,
    already_applied: CampaignsEvent::CommandAlreadyApplied,
};

/// Commits what a decision on one stream came to (see `effects::commit_decision`).
async fn commit<E>(
    tx: &mut PgConnection,
    props: &Properties,
    key: &str,
    (stream_id, stream_type, expected): (&str, &str, ExpectedVersion),
    decision: Result<Vec<E>, Error>,
    to_wire: fn(&E) -> CampaignsEvent,
) -> Result<(), HandlerError> {
    let decision = decision
        .map(|events| {
            vec![StreamEvents {
                stream_id,
                stream_type,
                expected,
                events: events.iter().map(to_wire).collect(),
            }]
        })
        .map_err(|error| (error.code(), error.to_string()));
    effects::commit_decision(tx, props, key, decision, REPLIES).await
}

/// Decides a command on its campaign's stream (`state`: how the campaign is loaded).
async fn on_campaign(
    tx: &mut PgConnection,
    props: &Properties,
    cache: &CampaignCache,
    command: CampaignCommand,
) -> Result<(), HandlerError> {
    let campaign_id = command.campaign_id();
    let loaded = state::load(tx, cache, campaign_id, command.reservation_id()).await?;
    let decision = loaded.campaign.decide(&command);
    let version = loaded.version;
    let decided = decision.as_deref().unwrap_or_default();
    state::decided(tx, cache, campaign_id, loaded, decided).await?;
    let stream_id = wire::campaign_stream(campaign_id);
    let stream = (stream_id.as_str(), "campaign", effects::expected(version));
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
        let (partner, version) = effects::load(
            tx,
            &stream_id,
            wire::stored,
            |state: &mut Partner, stored| {
                if let Stored::Partner(event) = stored {
                    state.apply(&event);
                }
            },
        )
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

/// A command message decided on its campaign's stream.
pub trait CampaignMessage: Message + Serialize + Send + Sync + 'static {
    fn command(&self) -> CampaignCommand;
}

/// `campaign-creation`: creates an advertiser's campaign.
impl CampaignMessage for CreateCampaign {
    fn command(&self) -> CampaignCommand {
        wire::create(self)
    }
}

/// `campaign-partner-association`: lets a partner promote a campaign.
impl CampaignMessage for AssociatePartner {
    fn command(&self) -> CampaignCommand {
        wire::associate_partner(self)
    }
}

/// `campaign-content-association`: attaches promotional content to a campaign.
impl CampaignMessage for AssociateContent {
    fn command(&self) -> CampaignCommand {
        wire::associate_content(self)
    }
}

/// `campaign-budget-reservation`: a saga's first step, holding one tracking event's commission
/// against the budget.
impl CampaignMessage for ReserveBudget {
    fn command(&self) -> CampaignCommand {
        wire::reserve_budget(self)
    }
}

/// `campaign-budget-release`: compensation, giving a reservation's amount back to the budget.
impl CampaignMessage for ReleaseBudget {
    fn command(&self) -> CampaignCommand {
        wire::release_budget(self)
    }
}

/// The handler of one campaign command topic, deciding on the campaign's stream through the
/// service's campaign cache.
#[derive(Debug)]
pub struct OnCampaign<M>(pub Arc<CampaignCache>, PhantomData<fn(M)>);

impl<M> OnCampaign<M> {
    pub fn new(cache: Arc<CampaignCache>) -> Self {
        OnCampaign(cache, PhantomData)
    }
}

impl<M> Default for OnCampaign<M> {
    fn default() -> Self {
        OnCampaign::new(Arc::default())
    }
}

impl<M: CampaignMessage> Handler for OnCampaign<M> {
    type Message = M;

    /// Reservations come keyed by their sagas and all write their campaign's stream: one lane
    /// per campaign, so that they queue instead of racing. (The API keys the other campaign
    /// commands by their campaign already.)
    fn lane(&self, message: &M, _key: &str) -> String {
        message.command().campaign_id().to_string()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<M>,
    ) -> Result<(), HandlerError> {
        on_campaign(
            tx,
            &incoming.properties,
            &self.0,
            incoming.message.command(),
        )
        .await
    }
}

pub type Creation = OnCampaign<CreateCampaign>;
pub type PartnerAssociation = OnCampaign<AssociatePartner>;
pub type ContentAssociation = OnCampaign<AssociateContent>;
pub type BudgetReservation = OnCampaign<ReserveBudget>;
pub type BudgetRelease = OnCampaign<ReleaseBudget>;
