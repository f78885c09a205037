//! The commissions domain, pure: the `Commission` aggregate (assigned from a campaign's rule for
//! one tracking event, reversed by compensation or a refund, and reinstated when that refund is
//! undone) and `PartnerBalance`, a fold of commissions and payouts into assigned − reversed −
//! paid.
//!
//! A compensation must never get stuck, and it may overtake the command it compensates (the saga
//! gave up waiting for the assignment). So reversing a commission that was never assigned succeeds
//! and records `Voided`, without effect on any balance, and a later `Assign` of that commission is
//! rejected instead of paying a commission the saga has already compensated.
//!
//! Retries are the same command (ids come from the client), so a command whose effect is already
//! in place decides nothing (an empty event list) before checking any other rule.

use std::collections::{BTreeMap, BTreeSet};

use eventstore::Aggregate;
use serde::Serialize;
use uuid::Uuid;

pub use schemas::values::{CommissionRule, Money};

/// A commission as assigned: what `Assigned` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub commission_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub tracking_id: Uuid,
    pub amount: Money,
}

/// The commission one tracking event earned a partner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Commission {
    state: State,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum State {
    #[default]
    Unknown,
    Assigned(Assignment),
    Reversed(Assignment),
    /// Reversed before it was ever assigned.
    Voided,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommissionCommand {
    Assign {
        commission_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        rule: CommissionRule,
        /// The order amount a percent rule applies to.
        order_amount: Option<Money>,
        /// ISO 4217 currency of the commission.
        currency: String,
    },
    /// Compensation (or a refund): takes an assigned commission back.
    Reverse { commission_id: Uuid, reason: String },
    /// The refund that reversed it was undone: the commission is assigned again, as it was.
    Reinstate { commission_id: Uuid, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommissionEvent {
    Assigned(Assignment),
    Reversed {
        commission_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        amount: Money,
        reason: String,
    },
    /// A reversal arrived before any assignment; the commission can no longer be assigned.
    Voided {
        commission_id: Uuid,
        reason: String,
    },
    Reinstated {
        commission_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        amount: Money,
        reason: String,
    },
}

impl Commission {
    /// The assignment, also after a reversal.
    pub fn assignment(&self) -> Option<&Assignment> {
        match &self.state {
            State::Assigned(assignment) | State::Reversed(assignment) => Some(assignment),
            State::Unknown | State::Voided => None,
        }
    }

    /// Whether the commission was reversed or voided.
    pub fn is_reversed(&self) -> bool {
        matches!(self.state, State::Reversed(_) | State::Voided)
    }
}

impl Aggregate for Commission {
    type Command = CommissionCommand;
    type Event = CommissionEvent;
    type Error = Error;

    fn decide(&self, command: &CommissionCommand) -> Result<Vec<CommissionEvent>, Error> {
        match command {
            CommissionCommand::Assign {
                commission_id,
                campaign_id,
                partner_id,
                tracking_id,
                rule,
                order_amount,
                currency,
            } => {
                let assignment = || -> Result<Assignment, Error> {
                    Ok(Assignment {
                        commission_id: *commission_id,
                        campaign_id: *campaign_id,
                        partner_id: *partner_id,
                        tracking_id: *tracking_id,
                        amount: commission_amount(*rule, order_amount.as_ref(), currency)?,
                    })
                };
                match &self.state {
                    State::Unknown => Ok(vec![CommissionEvent::Assigned(assignment()?)]),
                    State::Assigned(existing) | State::Reversed(existing) => match assignment() {
                        Ok(assignment) if assignment == *existing => Ok(vec![]),
                        Ok(_) | Err(_) => Err(Error::AlreadyAssigned(*commission_id)),
                    },
                    State::Voided => Err(Error::Voided(*commission_id)),
                }
            }
            CommissionCommand::Reverse {
                commission_id,
                reason,
            } => match &self.state {
                State::Unknown => Ok(vec![CommissionEvent::Voided {
                    commission_id: *commission_id,
                    reason: reason.clone(),
                }]),
                State::Assigned(assignment) => Ok(vec![CommissionEvent::Reversed {
                    commission_id: assignment.commission_id,
                    campaign_id: assignment.campaign_id,
                    partner_id: assignment.partner_id,
                    amount: assignment.amount.clone(),
                    reason: reason.clone(),
                }]),
                State::Reversed(_) | State::Voided => Ok(vec![]),
            },
            // Nothing to reinstate unless it was reversed: the effect is in place.
            CommissionCommand::Reinstate { reason, .. } => match &self.state {
                State::Reversed(assignment) => Ok(vec![CommissionEvent::Reinstated {
                    commission_id: assignment.commission_id,
                    campaign_id: assignment.campaign_id,
                    partner_id: assignment.partner_id,
                    amount: assignment.amount.clone(),
                    reason: reason.clone(),
                }]),
                State::Unknown | State::Assigned(_) | State::Voided => Ok(vec![]),
            },
        }
    }

    fn apply(&mut self, event: &CommissionEvent) {
        self.state = match (std::mem::take(&mut self.state), event) {
            (_, CommissionEvent::Assigned(assignment)) => State::Assigned(assignment.clone()),
            (State::Assigned(assignment), CommissionEvent::Reversed { .. }) => {
                State::Reversed(assignment)
            }
            (state, CommissionEvent::Reversed { .. }) => state,
            (_, CommissionEvent::Voided { .. }) => State::Voided,
            (State::Reversed(assignment), CommissionEvent::Reinstated { .. }) => {
                State::Assigned(assignment)
            }
            (state, CommissionEvent::Reinstated { .. }) => state,
        };
    }
}

/// The commission a rule pays in `currency`.
fn commission_amount(
    rule: CommissionRule,
    order_amount: Option<&Money>,
    currency: &str,
) -> Result<Money, Error> {
    if !is_currency_code(currency) {
        return Err(Error::InvalidCurrency(currency.to_owned()));
    }
    if let Some(order) = order_amount {
        if order.currency != currency {
            return Err(Error::CurrencyMismatch {
                expected: currency.to_owned(),
                found: order.currency.clone(),
            });
        }
        if order.amount < 0 {
            return Err(Error::InvalidOrderAmount(order.amount));
        }
    }
    let amount = match rule {
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
        CommissionRule::Fixed { amount } => amount,
        CommissionRule::Percent { basis_points } => {
            let order = order_amount.ok_or(Error::OrderAmountRequired)?;
            percent_of(order.amount, basis_points)
        }
    };
    Ok(Money::new(amount, currency))
}

/// `amount × basis_points / 10 000`, rounded down, for a non-negative amount and at most 10 000
/// basis points. Splitting the amount at 10 000 keeps every intermediate product within i64
/// (the whole product would overflow for amounts above ~9.2 × 10^14). The campaigns context
/// reserves budget with the same arithmetic; each context keeps its own copy.
fn percent_of(amount: i64, basis_points: i32) -> i64 {
    let basis_points = i64::from(basis_points);
    amount / 10_000 * basis_points + amount % 10_000 * basis_points / 10_000
}

fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase())
}

/// One currency's totals of a partner's balance, in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub assigned: i64,
    pub reversed: i64,
    pub paid: i64,
}

impl Totals {
    /// What the partner is owed; negative when a commission was reversed after it was paid.
    pub fn balance(&self) -> i64 {
        self.assigned - self.reversed - self.paid
    }
}

/// A partner's balance, folded from its commissions' events and its completed payouts. The caller
/// routes to it only the partner's own commissions and payouts. Every input is counted once by its
/// id, so an input delivered twice (payouts come from another service, at least once) is harmless.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartnerBalance {
    totals: BTreeMap<String, Totals>,
    assigned: BTreeSet<Uuid>,
    reversed: BTreeSet<Uuid>,
    paid: BTreeSet<Uuid>,
}

impl PartnerBalance {
    /// The totals in one currency; a partner may earn in several.
    pub fn totals(&self, currency: &str) -> Totals {
        self.totals.get(currency).copied().unwrap_or_default()
    }

    /// Every currency the partner has a total in, with its totals.
    pub fn currencies(&self) -> impl Iterator<Item = (&str, Totals)> {
        self.totals
            .iter()
            .map(|(currency, totals)| (currency.as_str(), *totals))
    }

    pub fn apply_commission(&mut self, event: &CommissionEvent) {
        match event {
            CommissionEvent::Assigned(assignment) => {
                if self.assigned.insert(assignment.commission_id) {
                    self.entry(&assignment.amount).assigned += assignment.amount.amount;
                }
            }
            CommissionEvent::Reversed {
                commission_id,
                amount,
                ..
            } => {
                if self.reversed.insert(*commission_id) {
                    self.entry(amount).reversed += amount.amount;
                }
            }
            CommissionEvent::Reinstated {
                commission_id,
                amount,
                ..
            } => {
                if self.reversed.remove(commission_id) {
                    self.entry(amount).reversed -= amount.amount;
                }
            }
            CommissionEvent::Voided { .. } => {}
        }
    }

    /// A payout the payments service completed (`PaymentCompleted` of a `PaymentRequested`).
    pub fn apply_payout(&mut self, payment_id: Uuid, amount: &Money) {
        if self.paid.insert(payment_id) {
            self.entry(amount).paid += amount.amount;
        }
    }

    fn entry(&mut self, amount: &Money) -> &mut Totals {
        self.totals.entry(amount.currency.clone()).or_default()
    }
}

/// Why a command was rejected; nothing changed. [`Error::code`] is the stable machine-readable
/// reason published in `CommandRejected`, the message its human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an ISO 4217 currency code")]
    InvalidCurrency(String),
    #[error("invalid commission rule: {0}")]
    InvalidCommissionRule(&'static str),
    #[error("a percent commission needs an order amount")]
    OrderAmountRequired,
    #[error("the order amount must not be negative, got {0}")]
    InvalidOrderAmount(i64),
    #[error("the order is in {found}, the commission in {expected}")]
    CurrencyMismatch { expected: String, found: String },
    #[error("commission {0} was already assigned with other data")]
    AlreadyAssigned(Uuid),
    #[error("commission {0} was reversed before it was assigned and can no longer be assigned")]
    Voided(Uuid),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidCurrency(_) => "invalid_currency",
            Error::InvalidCommissionRule(_) => "invalid_commission_rule",
            Error::OrderAmountRequired => "order_amount_required",
            Error::InvalidOrderAmount(_) => "invalid_order_amount",
            Error::CurrencyMismatch { .. } => "currency_mismatch",
            Error::AlreadyAssigned(_) => "commission_already_assigned",
            Error::Voided(_) => "commission_reversed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn commission(given: &[CommissionEvent]) -> Commission {
        Commission::folded(given)
    }

    // Given these events, when this command: the events decided, or the rejection('s code).
    fn when(
        given: &[CommissionEvent],
        command: CommissionCommand,
    ) -> Result<Vec<CommissionEvent>, Error> {
        Commission::given_when(given, &command)
    }

    fn rejection(given: &[CommissionEvent], command: CommissionCommand) -> &'static str {
        when(given, command).expect_err("a rejection").code()
    }

    fn assign(rule: CommissionRule, order_amount: Option<Money>) -> CommissionCommand {
        CommissionCommand::Assign {
            commission_id: id(1),
            campaign_id: id(10),
            partner_id: id(20),
            tracking_id: id(30),
            rule,
            order_amount,
            currency: "EUR".into(),
        }
    }

    fn fixed() -> CommissionCommand {
        assign(CommissionRule::Fixed { amount: 300 }, None)
    }

    fn percent(order_amount: Option<Money>) -> CommissionCommand {
        assign(CommissionRule::Percent { basis_points: 250 }, order_amount)
    }

    fn assignment(amount: i64) -> Assignment {
        Assignment {
            commission_id: id(1),
            campaign_id: id(10),
            partner_id: id(20),
            tracking_id: id(30),
            amount: Money::new(amount, "EUR"),
        }
    }

    fn assigned(amount: i64) -> CommissionEvent {
        CommissionEvent::Assigned(assignment(amount))
    }

    fn reverse() -> CommissionCommand {
        CommissionCommand::Reverse {
            commission_id: id(1),
            reason: "payment failed".into(),
        }
    }

    fn reversed(amount: i64) -> CommissionEvent {
        CommissionEvent::Reversed {
            commission_id: id(1),
            campaign_id: id(10),
            partner_id: id(20),
            amount: Money::new(amount, "EUR"),
            reason: "payment failed".into(),
        }
    }

    fn voided() -> CommissionEvent {
        CommissionEvent::Voided {
            commission_id: id(1),
            reason: "payment failed".into(),
        }
    }

    #[test]
    fn a_reversed_commission_is_reinstated_as_it_was_and_counts_again() {
        let reinstate = || CommissionCommand::Reinstate {
            commission_id: id(1),
            reason: "refund undone".into(),
        };
        let reinstated = CommissionEvent::Reinstated {
            commission_id: id(1),
            campaign_id: id(10),
            partner_id: id(20),
            amount: Money::new(300, "EUR"),
            reason: "refund undone".into(),
        };
        assert_eq!(
            when(&[assigned(300), reversed(300)], reinstate()),
            Ok(vec![reinstated.clone()])
        );
        let history = [assigned(300), reversed(300), reinstated.clone()];
        assert_eq!(when(&history, reinstate()), Ok(vec![]), "already assigned");
        assert_eq!(when(&[], reinstate()), Ok(vec![]), "nothing to reinstate");
        assert_eq!(when(&[voided()], reinstate()), Ok(vec![]));
        // Reversed again by a later refund.
        assert_eq!(when(&history, reverse()), Ok(vec![reversed(300)]));

        let mut balance = PartnerBalance::default();
        for event in history.iter().chain([&reversed(300), &reinstated]) {
            balance.apply_commission(event);
        }
        assert_eq!(
            balance.totals("EUR"),
            Totals {
                assigned: 300,
                reversed: 0,
                paid: 0
            }
        );
    }

    #[test]
    fn a_fixed_rule_assigns_its_amount() {
        assert_eq!(when(&[], fixed()), Ok(vec![assigned(300)]));
    }

    #[test]
    fn a_fixed_rule_ignores_the_order_amount() {
        let command = assign(
            CommissionRule::Fixed { amount: 300 },
            Some(Money::new(10_000, "EUR")),
        );
        assert_eq!(when(&[], command), Ok(vec![assigned(300)]));
    }

    #[test]
    fn a_percent_rule_assigns_its_share_of_the_order_rounded_down() {
        // 2.5 % of 12.99 EUR is 32.475 cents.
        assert_eq!(
            when(&[], percent(Some(Money::new(1_299, "EUR")))),
            Ok(vec![assigned(32)])
        );
    }

    #[test]
    fn the_percent_arithmetic_neither_overflows_nor_rounds_up() {
        assert_eq!(percent_of(i64::MAX, 10_000), i64::MAX);
        assert_eq!(percent_of(i64::MAX, 1), i64::MAX / 10_000);
        assert_eq!(percent_of(9_999, 9_999), 9_998);
    }

    #[test]
    fn assigning_the_same_commission_again_is_a_no_op() {
        assert_eq!(when(&[assigned(300)], fixed()), Ok(vec![]));
        assert_eq!(
            when(&[assigned(32)], percent(Some(Money::new(1_299, "EUR")))),
            Ok(vec![])
        );
    }

    #[test]
    fn assigning_a_commission_id_again_with_other_data_is_rejected() {
        let other_tracking_event = CommissionCommand::Assign {
            commission_id: id(1),
            campaign_id: id(10),
            partner_id: id(20),
            tracking_id: id(31),
            rule: CommissionRule::Fixed { amount: 300 },
            order_amount: None,
            currency: "EUR".into(),
        };
        assert_eq!(
            rejection(&[assigned(300)], other_tracking_event),
            "commission_already_assigned"
        );
        assert_eq!(
            rejection(&[assigned(300)], percent(None)),
            "commission_already_assigned"
        );
    }

    #[test]
    fn a_retried_assignment_after_its_reversal_is_a_no_op() {
        assert_eq!(when(&[assigned(300), reversed(300)], fixed()), Ok(vec![]));
    }

    #[test]
    fn an_assignment_with_invalid_data_is_rejected() {
        let cases = [
            (percent(None), "order_amount_required"),
            (percent(Some(Money::new(1_000, "USD"))), "currency_mismatch"),
            (percent(Some(Money::new(-1, "EUR"))), "invalid_order_amount"),
            (
                assign(CommissionRule::Fixed { amount: 0 }, None),
                "invalid_commission_rule",
            ),
            (
                assign(CommissionRule::Percent { basis_points: 0 }, None),
                "invalid_commission_rule",
            ),
            (
                assign(
                    CommissionRule::Percent {
                        basis_points: 10_001,
                    },
                    Some(Money::new(1_000, "EUR")),
                ),
                "invalid_commission_rule",
            ),
            (
                CommissionCommand::Assign {
                    commission_id: id(1),
                    campaign_id: id(10),
                    partner_id: id(20),
                    tracking_id: id(30),
                    rule: CommissionRule::Fixed { amount: 300 },
                    order_amount: None,
                    currency: "euro".into(),
                },
                "invalid_currency",
            ),
        ];
        for (command, code) in cases {
            assert_eq!(rejection(&[], command), code);
        }
    }

    #[test]
    fn an_assigned_commission_is_reversed_once() {
        assert_eq!(when(&[assigned(300)], reverse()), Ok(vec![reversed(300)]));
        assert_eq!(when(&[assigned(300), reversed(300)], reverse()), Ok(vec![]));
        assert!(commission(&[assigned(300), reversed(300)]).is_reversed());
    }

    #[test]
    fn reversing_a_commission_never_assigned_voids_it() {
        assert_eq!(when(&[], reverse()), Ok(vec![voided()]));
        assert_eq!(when(&[voided()], reverse()), Ok(vec![]));
        let voided = commission(&[voided()]);
        assert!(voided.is_reversed());
        assert_eq!(voided.assignment(), None);
    }

    #[test]
    fn a_voided_commission_cannot_be_assigned() {
        assert_eq!(rejection(&[voided()], fixed()), "commission_reversed");
    }

    #[test]
    fn a_balance_is_assigned_minus_reversed_minus_paid() {
        let mut balance = PartnerBalance::default();
        let other = CommissionEvent::Assigned(Assignment {
            commission_id: id(2),
            ..assignment(500)
        });
        for event in [assigned(300), other, reversed(300), voided()] {
            balance.apply_commission(&event);
        }
        balance.apply_payout(id(90), &Money::new(200, "EUR"));
        assert_eq!(
            balance.totals("EUR"),
            Totals {
                assigned: 800,
                reversed: 300,
                paid: 200,
            }
        );
        assert_eq!(balance.totals("EUR").balance(), 300);
    }

    #[test]
    fn a_balance_counts_every_input_once() {
        let mut balance = PartnerBalance::default();
        for event in [assigned(300), assigned(300), reversed(300), reversed(300)] {
            balance.apply_commission(&event);
        }
        balance.apply_payout(id(90), &Money::new(200, "EUR"));
        balance.apply_payout(id(90), &Money::new(200, "EUR"));
        assert_eq!(
            balance.totals("EUR"),
            Totals {
                assigned: 300,
                reversed: 300,
                paid: 200,
            }
        );
    }

    #[test]
    fn a_commission_reversed_after_its_payout_leaves_the_partner_owing_it() {
        let mut balance = PartnerBalance::default();
        balance.apply_commission(&assigned(300));
        balance.apply_payout(id(90), &Money::new(300, "EUR"));
        balance.apply_commission(&reversed(300));
        assert_eq!(balance.totals("EUR").balance(), -300);
    }

    #[test]
    fn a_balance_keeps_currencies_apart() {
        let mut balance = PartnerBalance::default();
        balance.apply_commission(&assigned(300));
        balance.apply_payout(id(90), &Money::new(100, "USD"));
        let currencies: Vec<_> = balance
            .currencies()
            .map(|(currency, totals)| (currency, totals.balance()))
            .collect();
        assert_eq!(currencies, [("EUR", 300), ("USD", -100)]);
        assert_eq!(balance.totals("GBP"), Totals::default());
    }

    #[test]
    fn every_rejection_has_a_distinct_snake_case_code() {
        let errors = [
            Error::InvalidCurrency(String::new()),
            Error::InvalidCommissionRule(""),
            Error::OrderAmountRequired,
            Error::InvalidOrderAmount(0),
            Error::CurrencyMismatch {
                expected: String::new(),
                found: String::new(),
            },
            Error::AlreadyAssigned(id(1)),
            Error::Voided(id(1)),
        ];
        let codes: BTreeSet<_> = errors.iter().map(Error::code).collect();
        assert_eq!(codes.len(), errors.len());
        for code in codes {
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
