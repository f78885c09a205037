//! The campaigns domain, pure: the `Partner` and `Campaign` aggregates decide commands into events
//! and evolve by applying them; every rule of SPEC §4 for partners, campaigns and budget lives here.
//!
//! A held budget reservation counts as spent: the commission it pays for is earned when the budget
//! is reserved, and only a release (the saga's compensation) gives the amount back. So the
//! invariant "reserved + spent never above the budget" is `spent <= budget`, checked on every
//! reservation.
//!
//! Retries are the same command (ids come from the client), so every command that finds its effect
//! already in place decides nothing (an empty event list) before checking any other rule.

mod error;

use eventstore::Aggregate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub use error::Error;
pub use schemas::values::{Money, TrackingKind};

/// How a campaign pays its partners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommissionRule {
    /// A fixed amount, in minor units of the budget's currency, per billable event.
    Fixed { amount: i64 },
    /// A share of the order amount in basis points (250 is 2.5 %), rounded down to a minor unit.
    Percent { basis_points: i32 },
}

/// The kind of promotional content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentKind {
    Banner,
    Link,
    Text,
    Video,
}

/// A partner's registration: what `RegisterPartner` asks for and `PartnerRegistered` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerRegistration {
    pub partner_id: Uuid,
    pub name: String,
    pub email: String,
    /// Where the payout provider sends the partner's money.
    pub payout_account: String,
}

/// A partner (affiliate), registered once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Partner {
    registration: Option<PartnerRegistration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerCommand {
    Register(PartnerRegistration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerEvent {
    Registered(PartnerRegistration),
}

impl Partner {
    pub fn registration(&self) -> Option<&PartnerRegistration> {
        self.registration.as_ref()
    }
}

impl Aggregate for Partner {
    type Command = PartnerCommand;
    type Event = PartnerEvent;
    type Error = Error;

    fn decide(&self, command: &PartnerCommand) -> Result<Vec<PartnerEvent>, Error> {
        match command {
            PartnerCommand::Register(registration) => {
                if let Some(existing) = &self.registration {
                    return if existing == registration {
                        Ok(vec![])
                    } else {
                        Err(Error::PartnerAlreadyRegistered(registration.partner_id))
                    };
                }
                validate_registration(registration)?;
                Ok(vec![PartnerEvent::Registered(registration.clone())])
            }
        }
    }

    fn apply(&mut self, event: &PartnerEvent) {
        match event {
            PartnerEvent::Registered(registration) => {
                self.registration = Some(registration.clone());
            }
        }
    }
}

fn validate_registration(registration: &PartnerRegistration) -> Result<(), Error> {
    if is_blank(&registration.name) {
        return Err(Error::InvalidPartner("the name is blank"));
    }
    if !registration.email.contains('@') {
        return Err(Error::InvalidPartner("the email address has no @"));
    }
    if is_blank(&registration.payout_account) {
        return Err(Error::InvalidPartner("the payout account is blank"));
    }
    Ok(())
}

/// What `CreateCampaign` asks for and `CampaignCreated` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDetails {
    pub campaign_id: Uuid,
    /// The advertiser owning the campaign (its tenant).
    pub advertiser_id: Uuid,
    pub name: String,
    pub budget: Money,
    pub commission_rule: CommissionRule,
    /// Microseconds since the Unix epoch; the campaign is active from this instant on.
    pub valid_from: i64,
    /// Microseconds since the Unix epoch; the campaign is no longer active at this instant.
    pub valid_until: i64,
}

/// Promotional content attached to a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub content_id: Uuid,
    pub kind: ContentKind,
    pub url: String,
    pub title: String,
    pub tags: Vec<String>,
}

/// An advertiser's campaign with its partners, content and budget reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    details: Option<CampaignDetails>,
    partners: BTreeSet<Uuid>,
    content: BTreeMap<Uuid, Content>,
    /// The reservations this state knows: every one when folded from the stream's start. A
    /// snapshot leaves them out (a campaign's reservations grow with its orders); the service
    /// makes the one a command names known before deciding (`know_reservation`).
    #[serde(skip)]
    reservations: BTreeMap<Uuid, Reservation>,
    /// The sum of held reservations, in the budget's currency.
    spent: i64,
}

/// A reservation is kept after its release, so that a retried reserve or release stays a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub partner_id: Uuid,
    pub tracking_id: Uuid,
    pub amount: Money,
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignCommand {
    Create(CampaignDetails),
    AssociatePartner {
        campaign_id: Uuid,
        partner_id: Uuid,
    },
    AssociateContent {
        campaign_id: Uuid,
        content: Content,
    },
    /// Holds the commission for one tracking event against the budget.
    ReserveBudget {
        reservation_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        kind: TrackingKind,
        /// The order amount a percent rule applies to; a conversion carries one.
        order_amount: Option<Money>,
        /// When the tracked event happened, in microseconds since the Unix epoch: the campaign
        /// must be active then.
        at: i64,
    },
    /// Compensation: gives a reservation's amount back to the budget.
    ReleaseBudget {
        reservation_id: Uuid,
        campaign_id: Uuid,
        reason: String,
    },
}

impl CampaignCommand {
    /// The campaign whose stream the command is decided on.
    pub fn campaign_id(&self) -> Uuid {
        match self {
            CampaignCommand::Create(details) => details.campaign_id,
            CampaignCommand::AssociatePartner { campaign_id, .. }
            | CampaignCommand::AssociateContent { campaign_id, .. }
            | CampaignCommand::ReserveBudget { campaign_id, .. }
            | CampaignCommand::ReleaseBudget { campaign_id, .. } => *campaign_id,
        }
    }

    /// The reservation the command decides on, if any.
    pub fn reservation_id(&self) -> Option<Uuid> {
        match self {
            CampaignCommand::ReserveBudget { reservation_id, .. }
            | CampaignCommand::ReleaseBudget { reservation_id, .. } => Some(*reservation_id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignEvent {
    Created(CampaignDetails),
    PartnerAssociated {
        campaign_id: Uuid,
        partner_id: Uuid,
    },
    ContentAssociated {
        campaign_id: Uuid,
        content: Content,
    },
    BudgetReserved {
        reservation_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        amount: Money,
    },
    BudgetReleased {
        reservation_id: Uuid,
        campaign_id: Uuid,
        amount: Money,
        reason: String,
    },
}

impl Campaign {
    pub fn details(&self) -> Option<&CampaignDetails> {
        self.details.as_ref()
    }

    /// The sum of held reservations, in minor units of the budget's currency.
    pub fn spent(&self) -> i64 {
        self.spent
    }

    /// The associated partners, in id order.
    pub fn partners(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.partners.iter().copied()
    }

    /// The associated content, in content id order.
    pub fn content(&self) -> impl Iterator<Item = &Content> {
        self.content.values()
    }

    /// The reservations this state knows (see the field), by id.
    pub fn reservations(&self) -> impl Iterator<Item = (&Uuid, &Reservation)> {
        self.reservations.iter()
    }

    /// Makes a reservation recorded before this state's snapshot known, as its events would.
    pub fn know_reservation(&mut self, reservation_id: Uuid, reservation: Reservation) {
        self.reservations
            .entry(reservation_id)
            .or_insert(reservation);
    }

    /// Forgets the reservations, keeping the state the size of the campaign's details.
    pub fn forget_reservations(&mut self) {
        self.reservations.clear();
    }

    fn created(&self, campaign_id: Uuid) -> Result<&CampaignDetails, Error> {
        self.details
            .as_ref()
            .ok_or(Error::CampaignNotFound(campaign_id))
    }

    fn create(&self, details: &CampaignDetails) -> Result<Vec<CampaignEvent>, Error> {
        if let Some(existing) = &self.details {
            return if existing == details {
                Ok(vec![])
            } else {
                Err(Error::CampaignAlreadyExists(details.campaign_id))
            };
        }
        if is_blank(&details.name) {
            return Err(Error::InvalidCampaignName);
        }
        if !is_currency_code(&details.budget.currency) {
            return Err(Error::InvalidCurrency(details.budget.currency.clone()));
        }
        if details.budget.amount <= 0 {
            return Err(Error::InvalidBudget(details.budget.amount));
        }
        match details.commission_rule {
            CommissionRule::Fixed { amount } if amount <= 0 => {
                return Err(Error::InvalidCommissionRule(
                    "a fixed commission must be positive",
                ));
            }
            CommissionRule::Percent { basis_points } if !(1..=10_000).contains(&basis_points) => {
                return Err(Error::InvalidCommissionRule(
                    "a percent commission must be between 1 and 10000 basis points",
                ));
            }
            CommissionRule::Fixed { .. } | CommissionRule::Percent { .. } => {}
        }
        if details.valid_from >= details.valid_until {
            return Err(Error::InvalidValidityWindow {
                valid_from: details.valid_from,
                valid_until: details.valid_until,
            });
        }
        Ok(vec![CampaignEvent::Created(details.clone())])
    }

    fn associate_content(
        &self,
        campaign_id: Uuid,
        content: &Content,
    ) -> Result<Vec<CampaignEvent>, Error> {
        self.created(campaign_id)?;
        if let Some(existing) = self.content.get(&content.content_id) {
            return if existing == content {
                Ok(vec![])
            } else {
                Err(Error::ContentAlreadyAssociated(content.content_id))
            };
        }
        if is_blank(&content.url) {
            return Err(Error::InvalidContent("the url is blank"));
        }
        if is_blank(&content.title) {
            return Err(Error::InvalidContent("the title is blank"));
        }
        Ok(vec![CampaignEvent::ContentAssociated {
            campaign_id,
            content: content.clone(),
        }])
    }

    fn reserve_budget(&self, reserve: Reserve<'_>) -> Result<Vec<CampaignEvent>, Error> {
        let details = self.created(reserve.campaign_id)?;
        if let Some(existing) = self.reservations.get(&reserve.reservation_id) {
            return if existing.partner_id == reserve.partner_id
                && existing.tracking_id == reserve.tracking_id
            {
                Ok(vec![])
            } else {
                Err(Error::ReservationConflict(reserve.reservation_id))
            };
        }
        if !self.partners.contains(&reserve.partner_id) {
            return Err(Error::PartnerNotAssociated {
                campaign_id: reserve.campaign_id,
                partner_id: reserve.partner_id,
            });
        }
        if reserve.at < details.valid_from || reserve.at >= details.valid_until {
            return Err(Error::CampaignNotActive {
                campaign_id: reserve.campaign_id,
                at: reserve.at,
            });
        }
        if reserve.kind == TrackingKind::Refund {
            return Err(Error::NotBillable(reserve.kind));
        }
        if reserve.kind == TrackingKind::Conversion && reserve.order_amount.is_none() {
            return Err(Error::OrderAmountRequired);
        }
        if let Some(order) = reserve.order_amount {
            if order.currency != details.budget.currency {
                return Err(Error::CurrencyMismatch {
                    expected: details.budget.currency.clone(),
                    found: order.currency.clone(),
                });
            }
            if order.amount < 0 {
                return Err(Error::InvalidOrderAmount(order.amount));
            }
        }
        let amount = commission_amount(details.commission_rule, reserve.order_amount)?;
        let remaining = details.budget.amount - self.spent;
        if amount > remaining {
            return Err(Error::BudgetExhausted {
                campaign_id: reserve.campaign_id,
                requested: amount,
                remaining,
            });
        }
        Ok(vec![CampaignEvent::BudgetReserved {
            reservation_id: reserve.reservation_id,
            campaign_id: reserve.campaign_id,
            partner_id: reserve.partner_id,
            tracking_id: reserve.tracking_id,
            amount: Money::new(amount, details.budget.currency.clone()),
        }])
    }
}

impl Aggregate for Campaign {
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type Error = Error;

    fn decide(&self, command: &CampaignCommand) -> Result<Vec<CampaignEvent>, Error> {
        match command {
            CampaignCommand::Create(details) => self.create(details),
            CampaignCommand::AssociatePartner {
                campaign_id,
                partner_id,
            } => {
                self.created(*campaign_id)?;
                if self.partners.contains(partner_id) {
                    return Ok(vec![]);
                }
                Ok(vec![CampaignEvent::PartnerAssociated {
                    campaign_id: *campaign_id,
                    partner_id: *partner_id,
                }])
            }
            CampaignCommand::AssociateContent {
                campaign_id,
                content,
            } => self.associate_content(*campaign_id, content),
            CampaignCommand::ReserveBudget {
                reservation_id,
                campaign_id,
                partner_id,
                tracking_id,
                kind,
                order_amount,
                at,
            } => self.reserve_budget(Reserve {
                reservation_id: *reservation_id,
                campaign_id: *campaign_id,
                partner_id: *partner_id,
                tracking_id: *tracking_id,
                kind: *kind,
                order_amount: order_amount.as_ref(),
                at: *at,
            }),
            CampaignCommand::ReleaseBudget {
                reservation_id,
                campaign_id,
                reason,
            } => Ok(self
                .reservations
                .get(reservation_id)
                .filter(|reservation| !reservation.released)
                .map(|reservation| CampaignEvent::BudgetReleased {
                    reservation_id: *reservation_id,
                    campaign_id: *campaign_id,
                    amount: reservation.amount.clone(),
                    reason: reason.clone(),
                })
                .into_iter()
                .collect()),
        }
    }

    fn apply(&mut self, event: &CampaignEvent) {
        match event {
            CampaignEvent::Created(details) => self.details = Some(details.clone()),
            CampaignEvent::PartnerAssociated { partner_id, .. } => {
                self.partners.insert(*partner_id);
            }
            CampaignEvent::ContentAssociated { content, .. } => {
                self.content.insert(content.content_id, content.clone());
            }
            CampaignEvent::BudgetReserved {
                reservation_id,
                partner_id,
                tracking_id,
                amount,
                ..
            } => {
                self.spent += amount.amount;
                self.reservations.insert(
                    *reservation_id,
                    Reservation {
                        partner_id: *partner_id,
                        tracking_id: *tracking_id,
                        amount: amount.clone(),
                        released: false,
                    },
                );
            }
            CampaignEvent::BudgetReleased {
                reservation_id,
                amount,
                ..
            } => {
                self.spent -= amount.amount;
                if let Some(reservation) = self.reservations.get_mut(reservation_id) {
                    reservation.released = true;
                }
            }
        }
    }
}

/// The fields of [`CampaignCommand::ReserveBudget`], borrowed, so its rules read as one function.
struct Reserve<'a> {
    reservation_id: Uuid,
    campaign_id: Uuid,
    partner_id: Uuid,
    tracking_id: Uuid,
    kind: TrackingKind,
    order_amount: Option<&'a Money>,
    at: i64,
}

/// The commission a rule pays, in minor units; the order amount must not be negative.
fn commission_amount(rule: CommissionRule, order_amount: Option<&Money>) -> Result<i64, Error> {
    match rule {
        CommissionRule::Fixed { amount } => Ok(amount),
        CommissionRule::Percent { basis_points } => {
            let order = order_amount.ok_or(Error::OrderAmountRequired)?;
            Ok(percent_of(order.amount, basis_points))
        }
    }
}

/// `amount × basis_points / 10 000`, rounded down, for a non-negative amount and at most 10 000
/// basis points. Splitting the amount at 10 000 keeps every intermediate product within i64
/// (the whole product would overflow for amounts above ~9.2 × 10^14).
fn percent_of(amount: i64, basis_points: i32) -> i64 {
    let basis_points = i64::from(basis_points);
    amount / 10_000 * basis_points + amount % 10_000 * basis_points / 10_000
}

fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase())
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: i64 = 1_700_000_000_000_000;
    const UNTIL: i64 = FROM + 30 * 24 * 3_600_000_000;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    // Given these events, when this command: the events decided, or the rejection.
    fn partner_when(
        given: &[PartnerEvent],
        when: PartnerCommand,
    ) -> Result<Vec<PartnerEvent>, Error> {
        let mut partner = Partner::default();
        given.iter().for_each(|event| partner.apply(event));
        partner.decide(&when)
    }

    fn campaign(given: &[CampaignEvent]) -> Campaign {
        Campaign::folded(given)
    }

    // Given these events, when this command: the events decided, or the rejection('s code).
    fn when(
        given: &[CampaignEvent],
        command: CampaignCommand,
    ) -> Result<Vec<CampaignEvent>, Error> {
        Campaign::given_when(given, &command)
    }

    fn rejection(given: &[CampaignEvent], command: CampaignCommand) -> &'static str {
        when(given, command).expect_err("a rejection").code()
    }

    fn registration() -> PartnerRegistration {
        PartnerRegistration {
            partner_id: id(1),
            name: "Ada's Deals".into(),
            email: "ada@example.com".into(),
            payout_account: "DE89370400440532013000".into(),
        }
    }

    fn details(rule: CommissionRule) -> CampaignDetails {
        CampaignDetails {
            campaign_id: id(10),
            advertiser_id: id(20),
            name: "Spring sale".into(),
            budget: Money::new(1_000, "EUR"),
            commission_rule: rule,
            valid_from: FROM,
            valid_until: UNTIL,
        }
    }

    fn fixed() -> CampaignDetails {
        details(CommissionRule::Fixed { amount: 300 })
    }

    fn percent() -> CampaignDetails {
        details(CommissionRule::Percent { basis_points: 250 })
    }

    fn associated(partner: u128) -> CampaignEvent {
        CampaignEvent::PartnerAssociated {
            campaign_id: id(10),
            partner_id: id(partner),
        }
    }

    /// A running fixed-rule campaign with partner 1 associated.
    fn running() -> Vec<CampaignEvent> {
        vec![CampaignEvent::Created(fixed()), associated(1)]
    }

    fn content(title: &str) -> Content {
        Content {
            content_id: id(30),
            kind: ContentKind::Banner,
            url: "https://example.com/banner.png".into(),
            title: title.into(),
            tags: vec!["spring".into()],
        }
    }

    fn reserve(reservation: u128, kind: TrackingKind, order: Option<Money>) -> CampaignCommand {
        CampaignCommand::ReserveBudget {
            reservation_id: id(reservation),
            campaign_id: id(10),
            partner_id: id(1),
            tracking_id: id(100 + reservation),
            kind,
            order_amount: order,
            at: FROM,
        }
    }

    fn click(reservation: u128) -> CampaignCommand {
        reserve(reservation, TrackingKind::Click, None)
    }

    fn reserved(reservation: u128, amount: i64) -> CampaignEvent {
        CampaignEvent::BudgetReserved {
            reservation_id: id(reservation),
            campaign_id: id(10),
            partner_id: id(1),
            tracking_id: id(100 + reservation),
            amount: Money::new(amount, "EUR"),
        }
    }

    fn release(reservation: u128) -> CampaignCommand {
        CampaignCommand::ReleaseBudget {
            reservation_id: id(reservation),
            campaign_id: id(10),
            reason: "commission rejected".into(),
        }
    }

    fn released(reservation: u128, amount: i64) -> CampaignEvent {
        CampaignEvent::BudgetReleased {
            reservation_id: id(reservation),
            campaign_id: id(10),
            amount: Money::new(amount, "EUR"),
            reason: "commission rejected".into(),
        }
    }

    #[test]
    fn a_partner_registers_once() {
        assert_eq!(
            partner_when(&[], PartnerCommand::Register(registration())),
            Ok(vec![PartnerEvent::Registered(registration())])
        );
    }

    #[test]
    fn registering_the_same_partner_again_is_a_no_op() {
        assert_eq!(
            partner_when(
                &[PartnerEvent::Registered(registration())],
                PartnerCommand::Register(registration())
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn registering_a_partner_id_again_with_other_data_is_rejected() {
        let other = PartnerRegistration {
            email: "other@example.com".into(),
            ..registration()
        };
        let error = partner_when(
            &[PartnerEvent::Registered(registration())],
            PartnerCommand::Register(other),
        )
        .unwrap_err();
        assert_eq!(error.code(), "partner_already_registered");
    }

    #[test]
    fn a_registration_with_blank_or_malformed_data_is_rejected() {
        let invalid = [
            PartnerRegistration {
                name: " ".into(),
                ..registration()
            },
            PartnerRegistration {
                email: "ada.example.com".into(),
                ..registration()
            },
            PartnerRegistration {
                payout_account: String::new(),
                ..registration()
            },
        ];
        for registration in invalid {
            let error = partner_when(&[], PartnerCommand::Register(registration)).unwrap_err();
            assert_eq!(error.code(), "invalid_partner");
        }
    }

    #[test]
    fn a_campaign_is_created() {
        assert_eq!(
            when(&[], CampaignCommand::Create(percent())),
            Ok(vec![CampaignEvent::Created(percent())])
        );
    }

    #[test]
    fn creating_the_same_campaign_again_is_a_no_op() {
        assert_eq!(
            when(&running(), CampaignCommand::Create(fixed())),
            Ok(vec![])
        );
    }

    #[test]
    fn creating_a_campaign_id_again_with_other_data_is_rejected() {
        assert_eq!(
            rejection(&running(), CampaignCommand::Create(percent())),
            "campaign_already_exists"
        );
    }

    #[test]
    fn a_campaign_with_invalid_data_is_rejected() {
        let cases = [
            (
                CampaignDetails {
                    name: "".into(),
                    ..fixed()
                },
                "invalid_campaign_name",
            ),
            (
                CampaignDetails {
                    budget: Money::new(1_000, "eur"),
                    ..fixed()
                },
                "invalid_currency",
            ),
            (
                CampaignDetails {
                    budget: Money::new(0, "EUR"),
                    ..fixed()
                },
                "invalid_budget",
            ),
            (
                details(CommissionRule::Fixed { amount: 0 }),
                "invalid_commission_rule",
            ),
            (
                details(CommissionRule::Percent { basis_points: 0 }),
                "invalid_commission_rule",
            ),
            (
                details(CommissionRule::Percent {
                    basis_points: 10_001,
                }),
                "invalid_commission_rule",
            ),
            (
                CampaignDetails {
                    valid_until: FROM,
                    ..fixed()
                },
                "invalid_validity_window",
            ),
        ];
        for (details, code) in cases {
            assert_eq!(rejection(&[], CampaignCommand::Create(details)), code);
        }
    }

    #[test]
    fn commands_on_a_campaign_that_does_not_exist_are_rejected() {
        let commands = [
            CampaignCommand::AssociatePartner {
                campaign_id: id(10),
                partner_id: id(1),
            },
            CampaignCommand::AssociateContent {
                campaign_id: id(10),
                content: content("Spring banner"),
            },
            click(1),
        ];
        for command in commands {
            assert_eq!(rejection(&[], command), "campaign_not_found");
        }
    }

    #[test]
    fn a_partner_is_associated_once() {
        let associate = CampaignCommand::AssociatePartner {
            campaign_id: id(10),
            partner_id: id(2),
        };
        assert_eq!(when(&running(), associate.clone()), Ok(vec![associated(2)]));
        let mut given = running();
        given.push(associated(2));
        assert_eq!(when(&given, associate), Ok(vec![]));
    }

    #[test]
    fn content_is_associated_once_by_content_id() {
        let associate = CampaignCommand::AssociateContent {
            campaign_id: id(10),
            content: content("Spring banner"),
        };
        let event = CampaignEvent::ContentAssociated {
            campaign_id: id(10),
            content: content("Spring banner"),
        };
        assert_eq!(when(&running(), associate.clone()), Ok(vec![event.clone()]));
        let mut given = running();
        given.push(event);
        assert_eq!(when(&given, associate), Ok(vec![]));
        let other = CampaignCommand::AssociateContent {
            campaign_id: id(10),
            content: content("Summer banner"),
        };
        assert_eq!(rejection(&given, other), "content_already_associated");
    }

    #[test]
    fn content_without_url_or_title_is_rejected() {
        let invalid = [
            Content {
                url: "".into(),
                ..content("Spring banner")
            },
            content(" "),
        ];
        for content in invalid {
            let associate = CampaignCommand::AssociateContent {
                campaign_id: id(10),
                content,
            };
            assert_eq!(rejection(&running(), associate), "invalid_content");
        }
    }

    #[test]
    fn a_fixed_rule_reserves_its_amount() {
        assert_eq!(when(&running(), click(1)), Ok(vec![reserved(1, 300)]));
    }

    #[test]
    fn a_fixed_rule_ignores_a_conversions_order_amount() {
        let conversion = reserve(1, TrackingKind::Conversion, Some(Money::new(99_999, "EUR")));
        assert_eq!(when(&running(), conversion), Ok(vec![reserved(1, 300)]));
    }

    #[test]
    fn a_percent_rule_reserves_its_share_of_the_order_rounded_down() {
        let given = [CampaignEvent::Created(percent()), associated(1)];
        // 2.5 % of 12.99 EUR is 32.475 cents.
        let conversion = reserve(1, TrackingKind::Conversion, Some(Money::new(1_299, "EUR")));
        assert_eq!(when(&given, conversion), Ok(vec![reserved(1, 32)]));
    }

    #[test]
    fn the_percent_arithmetic_neither_overflows_nor_rounds_up() {
        assert_eq!(percent_of(i64::MAX, 10_000), i64::MAX);
        assert_eq!(percent_of(i64::MAX, 1), i64::MAX / 10_000);
        assert_eq!(percent_of(9_999, 9_999), 9_998);
        assert_eq!(percent_of(0, 250), 0);
    }

    #[test]
    fn reserving_the_same_reservation_again_is_a_no_op() {
        let mut given = running();
        given.push(reserved(1, 300));
        assert_eq!(when(&given, click(1)), Ok(vec![]));
    }

    #[test]
    fn a_retried_reservation_is_a_no_op_even_when_the_budget_is_now_exhausted() {
        let mut given = running();
        given.extend([reserved(1, 300), reserved(2, 300), reserved(3, 300)]);
        assert_eq!(when(&given, click(3)), Ok(vec![]));
    }

    #[test]
    fn a_reservation_id_reused_for_another_tracking_event_is_rejected() {
        let mut given = running();
        given.push(reserved(1, 300));
        let other = CampaignCommand::ReserveBudget {
            reservation_id: id(1),
            campaign_id: id(10),
            partner_id: id(1),
            tracking_id: id(999),
            kind: TrackingKind::Click,
            order_amount: None,
            at: FROM,
        };
        assert_eq!(rejection(&given, other), "reservation_conflict");
    }

    #[test]
    fn a_partner_that_is_not_associated_cannot_reserve() {
        assert_eq!(
            rejection(&[CampaignEvent::Created(fixed())], click(1)),
            "partner_not_associated"
        );
    }

    #[test]
    fn a_reservation_outside_the_validity_window_is_rejected() {
        for at in [FROM - 1, UNTIL] {
            let command = CampaignCommand::ReserveBudget {
                reservation_id: id(1),
                campaign_id: id(10),
                partner_id: id(1),
                tracking_id: id(101),
                kind: TrackingKind::Lead,
                order_amount: None,
                at,
            };
            assert_eq!(rejection(&running(), command), "campaign_not_active");
        }
    }

    #[test]
    fn the_last_instant_before_the_window_ends_is_inside_it() {
        let command = CampaignCommand::ReserveBudget {
            reservation_id: id(1),
            campaign_id: id(10),
            partner_id: id(1),
            tracking_id: id(101),
            kind: TrackingKind::Click,
            order_amount: None,
            at: UNTIL - 1,
        };
        assert_eq!(when(&running(), command), Ok(vec![reserved(1, 300)]));
    }

    #[test]
    fn a_percent_rule_without_an_order_amount_is_rejected() {
        let given = [CampaignEvent::Created(percent()), associated(1)];
        assert_eq!(rejection(&given, click(1)), "order_amount_required");
    }

    #[test]
    fn a_refund_reserves_no_budget() {
        let refund = reserve(1, TrackingKind::Refund, Some(Money::new(10_000, "EUR")));
        assert_eq!(rejection(&running(), refund), "not_billable");
    }

    #[test]
    fn a_conversion_without_an_order_amount_is_rejected() {
        let conversion = reserve(1, TrackingKind::Conversion, None);
        assert_eq!(rejection(&running(), conversion), "order_amount_required");
    }

    #[test]
    fn an_order_in_another_currency_is_rejected() {
        let given = [CampaignEvent::Created(percent()), associated(1)];
        let conversion = reserve(1, TrackingKind::Conversion, Some(Money::new(1_000, "USD")));
        assert_eq!(rejection(&given, conversion), "currency_mismatch");
    }

    #[test]
    fn a_negative_order_amount_is_rejected() {
        let given = [CampaignEvent::Created(percent()), associated(1)];
        let conversion = reserve(1, TrackingKind::Conversion, Some(Money::new(-1, "EUR")));
        assert_eq!(rejection(&given, conversion), "invalid_order_amount");
    }

    #[test]
    fn a_reservation_beyond_the_budget_is_rejected() {
        let mut given = running();
        given.extend([reserved(1, 300), reserved(2, 300), reserved(3, 300)]);
        assert_eq!(
            when(&given, click(4)),
            Err(Error::BudgetExhausted {
                campaign_id: id(10),
                requested: 300,
                remaining: 100,
            })
        );
        assert_eq!(rejection(&given, click(4)), "budget_exhausted");
    }

    #[test]
    fn a_reservation_may_use_the_budget_up_to_the_last_unit() {
        let given = [
            CampaignEvent::Created(details(CommissionRule::Fixed { amount: 250 })),
            associated(1),
        ];
        let mut campaign = campaign(&given);
        for reservation in 1..=4 {
            for event in campaign.decide(&click(reservation)).unwrap() {
                campaign.apply(&event);
            }
        }
        assert_eq!(campaign.spent(), 1_000);
        assert_eq!(
            campaign.decide(&click(5)).unwrap_err().code(),
            "budget_exhausted"
        );
    }

    #[test]
    fn reservations_and_releases_never_take_spending_above_the_budget() {
        let mut campaign = campaign(&running());
        let mut reservation = 0;
        // Reserve until refused, release every other one, and again: the invariant holds after
        // every step.
        for _ in 0..3 {
            loop {
                reservation += 1;
                match campaign.decide(&click(reservation)) {
                    Ok(events) => events.iter().for_each(|event| campaign.apply(event)),
                    Err(error) => {
                        assert_eq!(error.code(), "budget_exhausted");
                        break;
                    }
                }
                assert!(campaign.spent() <= 1_000);
            }
            for released in (1..reservation).step_by(2) {
                let events = campaign.decide(&release(released)).unwrap();
                events.iter().for_each(|event| campaign.apply(event));
                assert!(campaign.spent() >= 0);
            }
        }
        assert!(campaign.spent() <= 1_000);
    }

    #[test]
    fn a_release_gives_the_reserved_amount_back() {
        let mut given = running();
        given.extend([reserved(1, 300), reserved(2, 300), reserved(3, 300)]);
        assert_eq!(when(&given, release(2)), Ok(vec![released(2, 300)]));
        given.push(released(2, 300));
        assert_eq!(campaign(&given).spent(), 600);
        assert_eq!(when(&given, click(4)), Ok(vec![reserved(4, 300)]));
    }

    #[test]
    fn releasing_a_released_reservation_is_a_no_op() {
        let mut given = running();
        given.extend([reserved(1, 300), released(1, 300)]);
        assert_eq!(when(&given, release(1)), Ok(vec![]));
    }

    #[test]
    fn reserving_a_released_reservation_again_is_a_no_op() {
        let mut given = running();
        given.extend([reserved(1, 300), released(1, 300)]);
        assert_eq!(when(&given, click(1)), Ok(vec![]));
    }

    #[test]
    fn releasing_an_unknown_reservation_is_a_no_op() {
        assert_eq!(when(&running(), release(1)), Ok(vec![]));
        assert_eq!(when(&[], release(1)), Ok(vec![]));
    }

    #[test]
    fn rejections_show_times_as_rfc_3339() {
        let inactive = Error::CampaignNotActive {
            campaign_id: id(1),
            at: 915_148_800_000_000,
        };
        assert!(
            inactive
                .to_string()
                .ends_with("is not active at 1999-01-01T00:00:00Z"),
            "{inactive}"
        );
        let window = Error::InvalidValidityWindow {
            valid_from: 1_500_000,
            valid_until: 0,
        };
        assert_eq!(
            window.to_string(),
            "the validity window must start before it ends \
             (from 1970-01-01T00:00:01.5Z, until 1970-01-01T00:00:00Z)"
        );
    }

    #[test]
    fn every_rejection_has_a_distinct_snake_case_code() {
        let errors = [
            Error::InvalidPartner(""),
            Error::PartnerAlreadyRegistered(id(1)),
            Error::CampaignAlreadyExists(id(1)),
            Error::CampaignNotFound(id(1)),
            Error::InvalidCampaignName,
            Error::InvalidCurrency(String::new()),
            Error::InvalidBudget(0),
            Error::InvalidCommissionRule(""),
            Error::InvalidValidityWindow {
                valid_from: 0,
                valid_until: 0,
            },
            Error::InvalidContent(""),
            Error::ContentAlreadyAssociated(id(1)),
            Error::PartnerNotAssociated {
                campaign_id: id(1),
                partner_id: id(2),
            },
            Error::CampaignNotActive {
                campaign_id: id(1),
                at: 0,
            },
            Error::OrderAmountRequired,
            Error::InvalidOrderAmount(0),
            Error::CurrencyMismatch {
                expected: String::new(),
                found: String::new(),
            },
            Error::BudgetExhausted {
                campaign_id: id(1),
                requested: 0,
                remaining: 0,
            },
            Error::ReservationConflict(id(1)),
        ];
        let codes: BTreeSet<_> = errors.iter().map(Error::code).collect();
        assert_eq!(codes.len(), errors.len());
        for code in codes {
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
