//! Sagas (SPEC §5): the flows as data (`catalogue`: definitions in versions; `flows`: today's
//! definitions) and the pure state machine that runs any of them (`decide`).
//!
//! A saga is event-sourced: [`Saga::on_input`] takes one input (the trigger, a reply, a timeout,
//! an operator's action) and returns the log entries it causes; [`Saga::apply`] folds an entry
//! into the state. The entries that send commands carry them, with ids derived from the saga id
//! and the step, so replaying a saga's inputs reproduces exactly the commands that were sent. No
//! IO, no clock: time comes in with each input. The log's JSON comes from the serde derives here
//! (`stored` for what they cannot say alone).

pub mod catalogue;
mod decide;
pub mod flows;
mod stored;

pub use catalogue::{Catalogue, Definition, Pivot, Policy, StepDefinition, Unknown};
pub use flows::CATALOGUE;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

pub use schemas::values::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SagaType {
    /// Started by a recorded billable click or lead.
    CommissionAssignment,
    /// Started by a recorded conversion (an order).
    OrderToPayment,
    /// Started by a recorded refund of a converted order (a chargeback).
    OrderRefund,
}

impl SagaType {
    pub fn name(self) -> &'static str {
        match self {
            SagaType::CommissionAssignment => "commission-assignment",
            SagaType::OrderToPayment => "order-to-payment",
            SagaType::OrderRefund => "order-refund",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            SagaType::CommissionAssignment,
            SagaType::OrderToPayment,
            SagaType::OrderRefund,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }
}

/// One forward step, and the compensation that undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    ReserveBudget,
    AssignCommission,
    RequestPayment,
    ConfirmTracking,
    ReverseCommission,
    ClawBack,
    ReleaseBudget,
    /// The compensation of the trigger itself: the tracking event is failed with the reason.
    Trigger,
}

/// Compensations are retried this often, with growing timeouts, before the saga parks.
pub const COMPENSATION_ATTEMPTS: u32 = 4;

/// The longest a saga waits for an answer it keeps asking for: whether its payment can be
/// cancelled, or a step past the payment.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(600);

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::ReserveBudget => "reserve-budget",
            Step::AssignCommission => "assign-commission",
            Step::RequestPayment => "request-payment",
            Step::ConfirmTracking => "confirm-tracking",
            Step::ReverseCommission => "reverse-commission",
            Step::ClawBack => "claw-back",
            Step::ReleaseBudget => "release-budget",
            Step::Trigger => "trigger",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Step::ReserveBudget,
            Step::AssignCommission,
            Step::RequestPayment,
            Step::ConfirmTracking,
            Step::ReverseCommission,
            Step::ClawBack,
            Step::ReleaseBudget,
            Step::Trigger,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// What the trigger told the saga, and the ids it chose for what it creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "stored::StoredData", into = "stored::StoredData")]
pub struct SagaData {
    pub tracking_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    /// `click`, `lead`, `conversion` or `refund`.
    pub kind: TrackingKind,
    pub order: Option<Order>,
    /// When the tracked event happened, microseconds since the epoch.
    pub occurred_at: i64,
    /// For a refund: the tracking id of the conversion it refunds, whose saga's ids it undoes.
    pub refund_of: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingKind {
    Click,
    Lead,
    Conversion,
    Refund,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub amount: Money,
}

/// A command a saga sends; the coordinator maps it to its topic's wire type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    ReserveBudget {
        reservation_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        kind: TrackingKind,
        order_amount: Option<Money>,
        occurred_at: i64,
    },
    ReleaseBudget {
        reservation_id: Uuid,
        campaign_id: Uuid,
        reason: String,
    },
    AssignCommission {
        commission_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        amount: Money,
    },
    ReverseCommission {
        commission_id: Uuid,
        reason: String,
    },
    RequestPayment {
        payment_id: Uuid,
        commission_id: Uuid,
        partner_id: Uuid,
        campaign_id: Uuid,
        amount: Money,
    },
    ConfirmTracking {
        tracking_id: Uuid,
    },
    FailTracking {
        tracking_id: Uuid,
        reason: String,
    },
    /// The pivot's question after its request went unanswered: cancel the payment unless it was
    /// requested, and otherwise say where it stands.
    CancelPayment {
        payment_id: Uuid,
        reason: String,
    },
    ReinstateCommission {
        commission_id: Uuid,
        reason: String,
    },
    ClawBack {
        clawback_id: Uuid,
        payment_id: Uuid,
        reason: String,
    },
    CancelClawBack {
        clawback_id: Uuid,
        payment_id: Uuid,
        reason: String,
    },
}

/// A service's answer to a command, matched to the command by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done (or already done). `amount` is what a budget reservation or commission came to.
    Succeeded {
        amount: Option<Money>,
    },
    Rejected {
        code: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorAction {
    /// Send the failing compensation again.
    Retry,
    /// The operator fixed what made the forward step fail (a budget raised, a service back): send
    /// that step again and go on forward. Only while nothing has been undone yet.
    Resume,
    /// Stop going forward (or stop retrying) and compensate what is left, skipping a failing
    /// compensation.
    Compensate,
}

impl OperatorAction {
    pub fn name(self) -> &'static str {
        match self {
            OperatorAction::Retry => "retry",
            OperatorAction::Resume => "resume",
            OperatorAction::Compensate => "compensate",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            OperatorAction::Retry,
            OperatorAction::Resume,
            OperatorAction::Compensate,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// Everything that moves a saga. `at` is when it happened, microseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The saga starts under `definition` (the latest of its type, when a trigger starts it).
    Start {
        saga_id: Uuid,
        definition: &'static Definition,
        data: SagaData,
        at: i64,
    },
    Reply {
        command_id: Uuid,
        message_id: Uuid,
        answer: Answer,
        at: i64,
    },
    Timeout {
        command_id: Uuid,
        attempt: u32,
        at: i64,
    },
    Operator {
        action: OperatorAction,
        actor: String,
        /// Why, in the operator's words.
        reason: Option<String>,
        at: i64,
    },
}

/// A command the saga sends, as its log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub step: Step,
    pub attempt: u32,
    pub command_id: Uuid,
    /// When to give up waiting (the coordinator keeps a durable timer).
    #[serde(rename = "timeout_ms", with = "stored::millis")]
    pub timeout: Duration,
    #[serde(flatten)]
    pub command: Command,
}

/// The saga log (SPEC §5): every entry of a saga's stream, stored as JSON tagged by `entry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    Started {
        saga_id: Uuid,
        saga_type: SagaType,
        /// The definition's version, kept until the saga ends. Entries written before versions
        /// read as the first.
        #[serde(default = "first_version")]
        definition_version: u32,
        data: SagaData,
        at: i64,
    },
    StepCommandSent {
        sent: Sent,
        at: i64,
    },
    StepSucceeded {
        step: Step,
        command_id: Uuid,
        message_id: Uuid,
        amount: Option<Money>,
        at: i64,
    },
    StepFailed {
        step: Step,
        command_id: Uuid,
        message_id: Uuid,
        code: String,
        reason: String,
        at: i64,
    },
    StepTimedOut {
        step: Step,
        command_id: Uuid,
        attempt: u32,
        at: i64,
    },
    CompensationStarted {
        reason: String,
        at: i64,
    },
    CompensationCommandSent {
        sent: Sent,
        at: i64,
    },
    CompensationSucceeded {
        step: Step,
        command_id: Uuid,
        message_id: Uuid,
        at: i64,
    },
    /// A compensation was refused or went unanswered (`message_id` is none for a timeout). A
    /// refused one is sent again after `retry_in` (a backoff with jitter); an unanswered one at
    /// once (its timeout was the wait); after the last attempt, neither: the saga parks.
    CompensationFailed {
        step: Step,
        command_id: Uuid,
        attempt: u32,
        message_id: Option<Uuid>,
        reason: String,
        /// Absent on entries written before refused compensations waited to be retried.
        #[serde(
            rename = "retry_in_ms",
            default,
            skip_serializing_if = "Option::is_none",
            with = "stored::millis_opt"
        )]
        retry_in: Option<Duration>,
        at: i64,
    },
    /// The backoff after a refused compensation ran out: `attempt` is sent now. `command_id` is
    /// the refused attempt's (the timer's key).
    CompensationRetryDue {
        step: Step,
        command_id: Uuid,
        attempt: u32,
        at: i64,
    },
    Parked {
        reason: String,
        at: i64,
    },
    OperatorActed {
        action: OperatorAction,
        actor: String,
        /// Absent on entries written before operators gave reasons.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: i64,
    },
    Completed {
        at: i64,
    },
    Compensated {
        at: i64,
    },
}

fn first_version() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    NotStarted,
    Running,
    Compensating,
    Parked,
    Completed,
    Compensated,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::NotStarted => "not_started",
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Parked => "parked",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
        }
    }
}

/// A saga's state, folded from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub saga_id: Uuid,
    /// The definition it started with (or starts with).
    pub definition: &'static Definition,
    pub data: Option<SagaData>,
    pub status: Status,
    /// The command awaiting an answer, forward or compensating.
    pub pending: Option<Sent>,
    /// Forward steps that succeeded (or may have: timed out), in order.
    pub done: Vec<Step>,
    /// Compensations still to run, next first.
    pub to_compensate: Vec<Step>,
    /// Why the saga is compensating.
    pub reason: Option<String>,
    /// What the budget reservation came to: the commission and payment amount.
    pub amount: Option<Money>,
    /// The pending compensation was refused; its next attempt waits for the backoff.
    pub awaiting_retry: bool,
    /// Operator actions taken on the parked saga: each starts the attempts anew, as commands of
    /// their own.
    pub operator_rounds: u32,
    /// The forward step whose failure (a rejection or its last timeout) started compensating.
    pub failed: Option<Step>,
}

impl Saga {
    pub fn new(saga_id: Uuid, definition: &'static Definition) -> Self {
        Saga {
            saga_id,
            definition,
            data: None,
            status: Status::NotStarted,
            pending: None,
            done: Vec::new(),
            to_compensate: Vec::new(),
            reason: None,
            amount: None,
            awaiting_retry: false,
            operator_rounds: 0,
            failed: None,
        }
    }

    /// Evolves the state by one log entry.
    pub fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Started { saga_id, data, .. } => {
                self.saga_id = *saga_id;
                self.data = Some(data.clone());
                self.status = Status::Running;
            }
            Entry::StepCommandSent { sent, .. } | Entry::CompensationCommandSent { sent, .. } => {
                self.pending = Some(sent.clone());
                self.awaiting_retry = false;
            }
            Entry::StepSucceeded { step, amount, .. } => {
                // The first amount a step reports (the budget reservation's) is what the saga
                // assigns and pays.
                if self.amount.is_none() {
                    self.amount = amount.clone();
                }
                self.done.push(*step);
                self.pending = None;
            }
            Entry::StepFailed { step, .. } => {
                self.pending = None;
                self.failed = Some(*step);
            }
            Entry::StepTimedOut { step, attempt, .. } => {
                // Exhausted: the command may still have taken effect, so it is compensated too.
                // A pivot is not: the saga goes on to ask whether it can still complete; nor is
                // a step past it, which is sent again.
                let Some(definition) = self.definition.step(*step) else {
                    return;
                };
                if *attempt >= definition.policy.attempts
                    && !definition.is_pivot()
                    && !self.past_pivot()
                {
                    self.done.push(*step);
                    self.pending = None;
                    self.failed = Some(*step);
                }
            }
            Entry::CompensationStarted { reason, .. } => {
                self.status = Status::Compensating;
                self.reason = Some(reason.clone());
                self.to_compensate = self.compensations();
            }
            Entry::CompensationSucceeded { .. } => {
                if !self.to_compensate.is_empty() {
                    self.to_compensate.remove(0);
                }
                self.pending = None;
            }
            Entry::CompensationFailed { retry_in, .. } => {
                self.awaiting_retry = retry_in.is_some();
            }
            Entry::CompensationRetryDue { .. } => {}
            Entry::Parked { .. } => {
                self.status = Status::Parked;
                self.pending = None;
            }
            Entry::OperatorActed { action, .. } => self.operator_acted(*action),
            Entry::Completed { .. } => self.status = Status::Completed,
            Entry::Compensated { .. } => self.status = Status::Compensated,
        }
    }
}

impl Saga {
    fn operator_acted(&mut self, action: OperatorAction) {
        match self.status {
            Status::Parked if action == OperatorAction::Resume => {
                // Forward again from the failed step: nothing was undone.
                self.status = Status::Running;
                self.operator_rounds += 1;
                if let Some(failed) = self.failed.take() {
                    self.done.retain(|step| *step != failed);
                }
                self.to_compensate.clear();
                self.reason = None;
            }
            Status::Parked => {
                self.status = Status::Compensating;
                self.operator_rounds += 1;
            }
            Status::Running if action == OperatorAction::Compensate => {
                // The unanswered command may have taken effect: compensate it too.
                if let Some(pending) = self.pending.take() {
                    self.done.push(pending.step);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn eur(amount: i64) -> Money {
        Money::new(amount, "EUR")
    }

    fn data(kind: TrackingKind) -> SagaData {
        SagaData {
            tracking_id: Uuid::from_u128(1),
            campaign_id: Uuid::from_u128(2),
            partner_id: Uuid::from_u128(3),
            kind,
            order: matches!(kind, TrackingKind::Conversion | TrackingKind::Refund).then(|| Order {
                order_id: "o-1".into(),
                amount: eur(10_000),
            }),
            occurred_at: 0,
            refund_of: (kind == TrackingKind::Refund).then(|| Uuid::from_u128(4)),
        }
    }

    const FLOWS: [SagaType; 3] = [
        SagaType::CommissionAssignment,
        SagaType::OrderToPayment,
        SagaType::OrderRefund,
    ];

    /// How the services answer a command in a scenario.
    #[derive(Debug, Clone, PartialEq)]
    enum Answering {
        Succeed,
        Reject,
        /// Never answer: every attempt times out.
        Silent,
    }

    /// A saga driven to its end by scripted services, with its whole log.
    struct Run {
        saga: Saga,
        log: Vec<Entry>,
        now: i64,
        replies: u128,
        /// Every input fed, for the duplicate and reordering checks.
        inputs: Vec<Input>,
    }

    impl Run {
        /// A saga of the latest version of `saga_type`.
        fn start(saga_type: SagaType) -> Run {
            Run::start_with(CATALOGUE.latest(saga_type).expect("a definition"))
        }

        /// An order-to-payment saga whose budget reservation came to 500.
        fn reserved() -> Run {
            let mut run = Run::start(SagaType::OrderToPayment);
            let reserve = run.saga.pending.clone().expect("reserve");
            run.answer(
                &reserve,
                Answer::Succeeded {
                    amount: Some(eur(500)),
                },
            );
            run
        }

        fn start_with(definition: &'static Definition) -> Run {
            let kind = match definition.saga_type {
                SagaType::CommissionAssignment => TrackingKind::Click,
                SagaType::OrderToPayment => TrackingKind::Conversion,
                SagaType::OrderRefund => TrackingKind::Refund,
            };
            let mut run = Run {
                saga: Saga::new(Uuid::nil(), definition),
                log: vec![],
                now: 0,
                replies: 100,
                inputs: vec![],
            };
            run.feed(Input::Start {
                saga_id: Uuid::from_u128(42),
                definition,
                data: data(kind),
                at: 0,
            });
            run
        }

        fn feed(&mut self, input: Input) -> Vec<Entry> {
            let entries = self.saga.on_input(&input);
            for entry in &entries {
                self.saga.apply(entry);
            }
            self.inputs.push(input);
            self.log.extend(entries.clone());
            entries
        }

        fn answer(&mut self, sent: &Sent, answer: Answer) {
            self.now += SECOND;
            self.replies += 1;
            let input = Input::Reply {
                command_id: sent.command_id,
                message_id: Uuid::from_u128(self.replies),
                answer,
                at: self.now,
            };
            self.feed(input);
        }

        /// Answers pending commands with `script(command)` until the saga stops waiting.
        fn drive(&mut self, script: impl Fn(&Sent) -> Answering) {
            self.drive_phased(|sent, _| script(sent));
        }

        /// [`Run::drive`], the script also told whether the command compensates.
        fn drive_phased(&mut self, script: impl Fn(&Sent, bool) -> Answering) {
            for _ in 0..100 {
                let Some(sent) = self.saga.pending.clone() else {
                    return;
                };
                if self.saga.awaiting_retry {
                    // The backoff of a refused compensation runs out.
                    self.backoff_runs_out(&sent);
                    continue;
                }
                match script(&sent, self.saga.status == Status::Compensating) {
                    Answering::Succeed => {
                        let amount =
                            matches!(sent.command, Command::ReserveBudget { .. }).then(|| eur(500));
                        self.answer(&sent, Answer::Succeeded { amount });
                    }
                    Answering::Reject => {
                        self.answer(
                            &sent,
                            Answer::Rejected {
                                code: "refused".into(),
                                reason: "scripted".into(),
                            },
                        );
                    }
                    Answering::Silent => self.time_out(&sent),
                }
            }
            panic!("the saga never settled: {:?}", self.saga);
        }

        /// `sent`'s timeout passes with no answer.
        fn time_out(&mut self, sent: &Sent) {
            self.now += sent.timeout.as_micros() as i64;
            self.feed(Input::Timeout {
                command_id: sent.command_id,
                attempt: sent.attempt,
                at: self.now,
            });
        }

        fn backoff_runs_out(&mut self, refused: &Sent) {
            let Some(Entry::CompensationFailed {
                retry_in: Some(retry_in),
                ..
            }) = self.log.last()
            else {
                panic!("a refused compensation waits: {:?}", self.log.last());
            };
            self.now += retry_in.as_micros() as i64;
            self.feed(Input::Timeout {
                command_id: refused.command_id,
                attempt: refused.attempt + 1,
                at: self.now,
            });
        }

        /// (step, forward or compensation) of every command sent, resends included.
        fn commands(&self) -> Vec<(Step, bool)> {
            self.log
                .iter()
                .filter_map(|e| match e {
                    Entry::StepCommandSent { sent, .. } => Some((sent.step, false)),
                    Entry::CompensationCommandSent { sent, .. } => Some((sent.step, true)),
                    _ => None,
                })
                .collect()
        }

        fn compensations(&self) -> Vec<Step> {
            let mut steps: Vec<Step> = self
                .commands()
                .into_iter()
                .filter(|(_, c)| *c)
                .map(|(s, _)| s)
                .collect();
            steps.dedup();
            steps
        }
    }

    /// Replaying the inputs a log records reproduces the log, entry for entry.
    fn assert_replays(run: &Run) {
        let replayed = crate::replay::replay(&CATALOGUE, &run.log).expect("the log replays");
        assert_eq!(replayed, run.saga);
    }

    #[test]
    fn happy_sagas_run_their_steps_in_order_and_complete() {
        for (saga_type, expected) in [
            (
                SagaType::CommissionAssignment,
                vec![
                    Step::ReserveBudget,
                    Step::AssignCommission,
                    Step::ConfirmTracking,
                ],
            ),
            (
                SagaType::OrderToPayment,
                vec![
                    Step::ReserveBudget,
                    Step::AssignCommission,
                    Step::RequestPayment,
                    Step::ConfirmTracking,
                ],
            ),
            (
                SagaType::OrderRefund,
                vec![
                    Step::ReverseCommission,
                    Step::ClawBack,
                    Step::ReleaseBudget,
                    Step::ConfirmTracking,
                ],
            ),
        ] {
            let mut run = Run::start(saga_type);
            run.drive(|_| Answering::Succeed);
            assert_eq!(run.saga.status, Status::Completed);
            assert_eq!(
                run.commands(),
                expected.into_iter().map(|s| (s, false)).collect::<Vec<_>>()
            );
            let amounts: Vec<&Money> = run
                .log
                .iter()
                .filter_map(|e| match e {
                    Entry::StepCommandSent {
                        sent:
                            Sent {
                                command:
                                    Command::AssignCommission { amount, .. }
                                    | Command::RequestPayment { amount, .. },
                                ..
                            },
                        ..
                    } => Some(amount),
                    _ => None,
                })
                .collect();
            assert!(
                amounts.iter().all(|a| **a == eur(500)),
                "the reserved amount is what is assigned and paid"
            );
            assert_replays(&run);
        }
    }

    #[test]
    fn a_failure_at_every_step_compensates_exactly_the_completed_steps_in_reverse() {
        for saga_type in FLOWS {
            let steps = CATALOGUE.latest(saga_type).expect("a definition").steps;
            for (failing, definition) in steps.iter().enumerate() {
                let step = definition.step;
                for how in [Answering::Reject, Answering::Silent] {
                    let until_answered = definition.policy.attempts == u32::MAX
                        || steps[..failing].iter().any(|s| s.is_pivot());
                    if how == Answering::Silent && until_answered {
                        // Sent again until it answers: see the tests below.
                        continue;
                    }
                    let mut run = Run::start(saga_type);
                    // A payment that went unanswered is asked about; payments confirms that
                    // it cancelled it.
                    run.drive_phased(|sent, compensating| {
                        if sent.step == step
                            && !compensating
                            && !matches!(sent.command, Command::CancelPayment { .. })
                        {
                            how.clone()
                        } else {
                            Answering::Succeed
                        }
                    });
                    // Done before the failure, plus the failing step itself when it timed out
                    // (it may have happened; a cancelled payment did not); those with an undo
                    // are undone.
                    let mut undone: Vec<Step> = steps[..failing].iter().map(|s| s.step).collect();
                    if how == Answering::Silent && !definition.is_pivot() {
                        undone.push(step);
                    }
                    let mut expected: Vec<Step> = undone
                        .into_iter()
                        .rev()
                        .filter(|s| steps.iter().any(|d| d.step == *s && d.undo.is_some()))
                        .collect();
                    expected.push(Step::Trigger);
                    let case =
                        format!("{} failing at {} by {how:?}", saga_type.name(), step.name());
                    assert_eq!(run.saga.status, Status::Compensated, "{case}");
                    assert_eq!(run.compensations(), expected, "{case}");
                    let sent_each_once = run.commands().iter().filter(|(_, c)| *c).count();
                    assert_eq!(
                        sent_each_once,
                        expected.len(),
                        "{case}: each compensation sent once"
                    );
                    let forward_after_failure = run
                        .commands()
                        .iter()
                        .skip_while(|(s, c)| *c || *s != step)
                        .filter(|(s, c)| !*c && *s != step)
                        .count();
                    assert_eq!(
                        forward_after_failure, 0,
                        "{case}: nothing goes forward after the failure"
                    );
                    assert_replays(&run);
                }
            }
        }
    }

    /// Drives an order-to-payment saga to its payment, lets both attempts time out, and returns
    /// the cancel it then sends.
    fn asking_to_cancel() -> (Run, Sent) {
        let mut run = Run::start(SagaType::OrderToPayment);
        for _ in 0..2 {
            let sent = run.saga.pending.clone().expect("pending");
            run.answer(
                &sent,
                Answer::Succeeded {
                    amount: (sent.step == Step::ReserveBudget).then(|| eur(500)),
                },
            );
        }
        for attempt in 1..=2 {
            let sent = run.saga.pending.clone().expect("the payment");
            assert_eq!((sent.step, sent.attempt), (Step::RequestPayment, attempt));
            assert!(matches!(sent.command, Command::RequestPayment { .. }));
            run.time_out(&sent);
        }
        let cancel = run.saga.pending.clone().expect("a cancel");
        assert!(run.saga.settles_pivot(&cancel), "{cancel:?}");
        assert_eq!(run.saga.status, Status::Running, "not compensating");
        (run, cancel)
    }

    fn rejected(code: &str) -> Answer {
        Answer::Rejected {
            code: code.into(),
            reason: format!("payments says {code}"),
        }
    }

    #[test]
    fn a_payment_that_times_out_is_compensated_only_once_payments_confirms_its_cancel() {
        for confirmation in [
            Answer::Succeeded { amount: None },
            rejected("payment_cancelled"),
        ] {
            let (mut run, cancel) = asking_to_cancel();
            run.answer(&cancel, confirmation);
            assert_eq!(run.saga.status, Status::Compensating);
            run.drive(|_| Answering::Succeed);
            assert_eq!(run.saga.status, Status::Compensated);
            assert_eq!(
                run.compensations(),
                [Step::AssignCommission, Step::ReserveBudget, Step::Trigger]
            );
            assert_replays(&run);
        }
    }

    #[test]
    fn a_payment_declined_meanwhile_is_compensated_and_one_paid_goes_forward() {
        let (mut run, cancel) = asking_to_cancel();
        run.answer(&cancel, rejected("payment_already_failed"));
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.saga.status, Status::Compensated);
        assert_replays(&run);

        let (mut run, cancel) = asking_to_cancel();
        run.answer(&cancel, rejected("payment_already_completed"));
        assert_eq!(
            run.saga.pending.as_ref().map(|p| p.step),
            Some(Step::ConfirmTracking)
        );
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.saga.status, Status::Completed);
        assert_eq!(run.compensations(), []);
        assert_replays(&run);
    }

    #[test]
    fn a_payment_in_flight_is_waited_for_and_its_own_outcome_decides() {
        for (outcome, status) in [
            (Answer::Succeeded { amount: None }, Status::Completed),
            (rejected("payment_failed"), Status::Compensated),
        ] {
            let (mut run, cancel) = asking_to_cancel();
            run.answer(&cancel, rejected("payment_in_flight"));
            assert_eq!(run.saga.pending, Some(cancel.clone()), "still waiting");
            // Asked again after the timeout, with an id of its own, waiting longer.
            run.time_out(&cancel);
            let again = run.saga.pending.clone().expect("asked again");
            assert!(run.saga.settles_pivot(&again));
            assert_eq!(again.attempt, 2);
            assert_ne!(again.command_id, cancel.command_id);
            assert!(again.timeout > cancel.timeout);
            // The payment's own outcome arrives, answering its request.
            let request = run
                .log
                .iter()
                .find_map(|e| match e {
                    Entry::StepCommandSent { sent, .. }
                        if matches!(sent.command, Command::RequestPayment { .. }) =>
                    {
                        Some(sent.clone())
                    }
                    _ => None,
                })
                .expect("the request");
            run.answer(&request, outcome);
            run.drive(|_| Answering::Succeed);
            assert_eq!(run.saga.status, status);
            assert_replays(&run);
        }
    }

    #[test]
    fn a_payment_never_answered_is_asked_about_but_never_compensated() {
        let (mut run, _) = asking_to_cancel();
        for _ in 0..50 {
            let sent = run.saga.pending.clone().expect("asking");
            assert!(run.saga.settles_pivot(&sent));
            assert!(sent.timeout <= MAX_RETRY_WAIT);
            run.time_out(&sent);
        }
        assert_eq!(run.saga.status, Status::Running);
        assert!(run.compensations().is_empty());
        assert_replays(&run);
    }

    #[test]
    fn a_step_past_the_payment_is_sent_again_until_it_answers_and_never_compensated() {
        let mut run = Run::start(SagaType::OrderToPayment);
        while let Some(sent) = run.saga.pending.clone()
            && sent.step != Step::ConfirmTracking
        {
            let amount = (sent.step == Step::ReserveBudget).then(|| eur(500));
            run.answer(&sent, Answer::Succeeded { amount });
        }
        let first = run.saga.pending.clone().expect("confirming");
        for _ in 0..20 {
            let sent = run.saga.pending.clone().expect("still confirming");
            assert_eq!((sent.step, sent.command_id), (first.step, first.command_id));
            assert!(sent.timeout <= MAX_RETRY_WAIT);
            run.time_out(&sent);
        }
        assert_eq!(run.saga.status, Status::Running);
        assert!(run.compensations().is_empty(), "a paid saga undoes nothing");
        let last = run.saga.pending.clone().expect("confirming");
        assert_eq!((last.attempt, last.timeout), (21, MAX_RETRY_WAIT));
        run.answer(&last, Answer::Succeeded { amount: None });
        assert_eq!(run.saga.status, Status::Completed);
        assert_replays(&run);
    }

    #[test]
    fn a_timed_out_command_is_resent_with_the_same_id_then_succeeds() {
        let mut run = Run::start(SagaType::CommissionAssignment);
        let first = run.saga.pending.clone().expect("reserve");
        run.feed(Input::Timeout {
            command_id: first.command_id,
            attempt: 1,
            at: 10 * SECOND,
        });
        let second = run.saga.pending.clone().expect("resent");
        assert_eq!((second.command_id, second.attempt), (first.command_id, 2));
        // The first attempt's timer is stale now.
        assert!(
            run.feed(Input::Timeout {
                command_id: first.command_id,
                attempt: 1,
                at: 11 * SECOND
            })
            .is_empty()
        );
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.saga.status, Status::Completed);
        assert_replays(&run);
    }

    #[test]
    fn duplicated_and_reordered_replies_change_nothing() {
        let mut run = Run::start(SagaType::OrderToPayment);
        run.drive(|_| Answering::Succeed);
        let log = run.log.clone();
        let replies: Vec<Input> = run
            .inputs
            .iter()
            .filter(|i| matches!(i, Input::Reply { .. }))
            .cloned()
            .collect();
        // Every reply again, newest first, and a reply to a command never sent.
        for reply in replies.iter().rev() {
            assert!(run.feed(reply.clone()).is_empty(), "{reply:?}");
        }
        let stray = Input::Reply {
            command_id: Uuid::from_u128(7),
            message_id: Uuid::from_u128(8),
            answer: Answer::Succeeded { amount: None },
            at: 0,
        };
        assert!(run.feed(stray).is_empty());
        assert_eq!(run.log, log);

        // During compensation: a late forward reply and a repeated compensation reply are ignored.
        let mut run = Run::reserved();
        let Entry::StepCommandSent { sent: reserve, .. } = run.log[1].clone() else {
            panic!("the reservation is sent first");
        };
        let assign = run.saga.pending.clone().expect("assign");
        run.answer(
            &assign,
            Answer::Rejected {
                code: "refused".into(),
                reason: "no".into(),
            },
        );
        let release = run.saga.pending.clone().expect("release");
        let before = run.log.len();
        run.answer(
            &reserve,
            Answer::Succeeded {
                amount: Some(eur(500)),
            },
        );
        run.answer(&assign, Answer::Succeeded { amount: None });
        assert_eq!(run.log.len(), before);
        run.answer(&release, Answer::Succeeded { amount: None });
        run.answer(&release, Answer::Succeeded { amount: None });
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.compensations(), [Step::ReserveBudget, Step::Trigger]);
        assert_eq!(run.saga.status, Status::Compensated);
    }

    #[test]
    fn a_compensation_that_keeps_failing_parks_the_saga_for_an_operator() {
        for (action, expect_resent, ends) in [
            (OperatorAction::Retry, true, Status::Compensated),
            (OperatorAction::Resume, false, Status::Completed),
            (OperatorAction::Compensate, false, Status::Compensated),
        ] {
            let mut run = Run::start(SagaType::CommissionAssignment);
            let reserve = run.saga.pending.clone().expect("reserve");
            run.answer(
                &reserve,
                Answer::Rejected {
                    code: "budget_exhausted".into(),
                    reason: "no budget".into(),
                },
            );
            // Failing the tracking event is refused every time.
            run.drive(|_| Answering::Reject);
            assert_eq!(run.saga.status, Status::Parked);
            let attempts = run
                .commands()
                .iter()
                .filter(|(s, c)| *c && *s == Step::Trigger)
                .count();
            assert_eq!(attempts as u32, COMPENSATION_ATTEMPTS);
            let timeouts: Vec<Duration> = run
                .log
                .iter()
                .filter_map(|e| match e {
                    Entry::CompensationCommandSent { sent, .. } => Some(sent.timeout),
                    _ => None,
                })
                .collect();
            assert!(
                timeouts.windows(2).all(|w| w[1] > w[0]),
                "growing waits: {timeouts:?}"
            );

            run.feed(Input::Operator {
                action,
                actor: "alice".into(),
                reason: None,
                at: run.now + SECOND,
            });
            assert!(
                run.log
                    .iter()
                    .any(|e| matches!(e, Entry::OperatorActed { actor, .. } if actor == "alice"))
            );
            let resent = run
                .commands()
                .iter()
                .filter(|(s, c)| *c && *s == Step::Trigger)
                .count() as u32
                > COMPENSATION_ATTEMPTS;
            assert_eq!(resent, expect_resent, "{action:?}");
            if action == OperatorAction::Resume {
                // The budget was raised: the refused reservation goes again, as a new command.
                let again = run.saga.pending.clone().expect("the reservation again");
                assert_eq!((again.step, again.attempt), (Step::ReserveBudget, 1));
                assert_ne!(again.command_id, reserve.command_id);
                assert_eq!(run.saga.status, Status::Running);
            }
            run.drive(|_| Answering::Succeed);
            assert_eq!(run.saga.status, ends, "{action:?}");
            assert_replays(&run);
        }
    }

    #[test]
    fn a_late_success_of_an_earlier_compensation_attempt_counts() {
        let mut run = Run::start(SagaType::CommissionAssignment);
        let reserve = run.saga.pending.clone().expect("reserve");
        run.answer(&reserve, rejected("budget_exhausted"));
        let first = run.saga.pending.clone().expect("fail tracking");
        run.time_out(&first);
        let second = run.saga.pending.clone().expect("the second attempt");
        assert_eq!((second.step, second.attempt), (first.step, 2));

        // The service was down; back, it answers the first attempt's command first.
        run.answer(&first, rejected("late refusal of an old attempt"));
        assert_eq!(
            run.saga.pending,
            Some(second.clone()),
            "an old refusal changes nothing"
        );
        run.answer(&first, Answer::Succeeded { amount: None });
        assert_eq!(run.saga.status, Status::Compensated);
        let before = run.log.len();
        run.answer(&second, Answer::Succeeded { amount: None });
        assert_eq!(
            run.log.len(),
            before,
            "the second attempt's answer is one too many"
        );
        assert_replays(&run);
    }

    #[test]
    fn a_refused_compensation_waits_a_growing_jittered_backoff_each_time_as_a_new_command() {
        let mut run = Run::start(SagaType::CommissionAssignment);
        let reserve = run.saga.pending.clone().expect("reserve");
        run.answer(&reserve, rejected("budget_exhausted"));
        let first = run.saga.pending.clone().expect("fail tracking");
        run.answer(&first, rejected("busy"));
        assert!(run.saga.awaiting_retry);
        assert_eq!(
            run.saga.pending,
            Some(first.clone()),
            "nothing sent at once"
        );
        // A late duplicate of the refusal changes nothing while the backoff runs.
        assert_eq!(
            run.saga.on_input(&Input::Reply {
                command_id: first.command_id,
                message_id: Uuid::from_u128(7),
                answer: rejected("busy"),
                at: run.now,
            }),
            vec![]
        );
        run.drive(|_| Answering::Reject);
        assert_eq!(run.saga.status, Status::Parked);
        let waits: Vec<Duration> = run
            .log
            .iter()
            .filter_map(|e| match e {
                Entry::CompensationFailed { retry_in, .. } => *retry_in,
                _ => None,
            })
            .collect();
        assert_eq!(waits.len() as u32, COMPENSATION_ATTEMPTS - 1);
        assert!(waits.windows(2).all(|w| w[1] > w[0]), "growing: {waits:?}");
        let base = catalogue::TRIGGER.policy.timeout / 2;
        assert!(waits[0] >= base && waits[0] < base * 3 / 2, "{waits:?}");
        let ids: std::collections::HashSet<Uuid> = run
            .log
            .iter()
            .filter_map(|e| match e {
                Entry::CompensationCommandSent { sent, .. } => Some(sent.command_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            ids.len() as u32,
            COMPENSATION_ATTEMPTS,
            "each attempt decided anew"
        );
        assert_replays(&run);

        // Another saga refused at the same moment waits another time.
        let mut other = Run::start(SagaType::CommissionAssignment);
        other.saga.saga_id = Uuid::from_u128(43);
        let jittered = other.saga.retry_backoff(Step::Trigger, 2);
        assert_ne!(jittered, run.saga.retry_backoff(Step::Trigger, 2));
    }

    #[test]
    fn resume_is_refused_once_a_step_was_undone() {
        let mut run = Run::start(SagaType::OrderToPayment);
        // Budget reserved, commission refused: the reservation is released, then failing the
        // tracking event is refused until the saga parks.
        run.drive(|sent| match sent.command {
            Command::ReserveBudget { .. } | Command::ReleaseBudget { .. } => Answering::Succeed,
            _ => Answering::Reject,
        });
        assert_eq!(run.saga.status, Status::Parked);
        let resume = Input::Operator {
            action: OperatorAction::Resume,
            actor: "alice".into(),
            reason: None,
            at: run.now + SECOND,
        };
        assert_eq!(
            run.saga.on_input(&resume),
            vec![],
            "the budget was released already"
        );
        run.feed(Input::Operator {
            action: OperatorAction::Compensate,
            actor: "alice".into(),
            reason: None,
            at: run.now + SECOND,
        });
        assert_eq!(run.saga.status, Status::Compensated);
        assert_replays(&run);
    }

    #[test]
    fn an_operator_can_force_a_running_saga_to_compensate() {
        let mut run = Run::reserved();
        // The commission command is out, unanswered: it may have taken effect.
        run.feed(Input::Operator {
            action: OperatorAction::Compensate,
            actor: "bob".into(),
            reason: None,
            at: 5 * SECOND,
        });
        run.drive(|_| Answering::Succeed);
        assert_eq!(
            run.compensations(),
            [Step::AssignCommission, Step::ReserveBudget, Step::Trigger]
        );
        assert_eq!(run.saga.status, Status::Compensated);
        assert_replays(&run);
        // Operators cannot act on a saga that ended.
        let mut done = Run::start(SagaType::CommissionAssignment);
        done.drive(|_| Answering::Succeed);
        assert!(
            done.feed(Input::Operator {
                action: OperatorAction::Retry,
                actor: "bob".into(),
                reason: None,
                at: 0
            })
            .is_empty()
        );
    }

    #[test]
    fn a_reservation_without_an_amount_is_compensated_not_completed() {
        let mut run = Run::start(SagaType::OrderToPayment);
        let reserve = run.saga.pending.clone().expect("reserve");
        run.answer(&reserve, Answer::Succeeded { amount: None });
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.saga.status, Status::Compensated);
        assert_eq!(run.compensations(), [Step::ReserveBudget, Step::Trigger]);
    }

    #[test]
    fn the_ids_a_saga_chooses_are_derived_from_it() {
        let a = Run::start(SagaType::OrderToPayment);
        let b = Run::start(SagaType::OrderToPayment);
        assert_eq!(
            a.log, b.log,
            "the same trigger makes the same commands, ids included"
        );
        let mut other = Saga::new(Uuid::nil(), &flows::ORDER_TO_PAYMENT_V1);
        let entries = other.on_input(&Input::Start {
            saga_id: Uuid::from_u128(43),
            definition: &flows::ORDER_TO_PAYMENT_V1,
            data: data(TrackingKind::Conversion),
            at: 0,
        });
        other.apply(&entries[0]);
        assert_ne!(entries[1], a.log[1], "another saga chooses other ids");
    }

    /// Order-to-payment as a later version might have it: the tracking event confirmed before
    /// the payout.
    static ORDER_TO_PAYMENT_V2: Definition = Definition {
        saga_type: SagaType::OrderToPayment,
        version: 2,
        steps: &[
            flows::RESERVE_BUDGET,
            flows::ASSIGN_COMMISSION,
            flows::CONFIRM_TRACKING,
            flows::REQUEST_PAYMENT,
        ],
    };

    /// Deployed beside the first version, which sagas in flight still run.
    static WITH_V2: Catalogue = Catalogue(&[&flows::ORDER_TO_PAYMENT_V1, &ORDER_TO_PAYMENT_V2]);

    /// The first version taken out.
    static ONLY_V2: Catalogue = Catalogue(&[&ORDER_TO_PAYMENT_V2]);

    fn forward_steps(run: &Run) -> Vec<Step> {
        run.commands().into_iter().map(|(step, _)| step).collect()
    }

    #[test]
    fn a_saga_in_flight_keeps_the_version_it_started_with() {
        // Started under the first version, its budget reserved, its commission requested.
        let mut run = Run::reserved();
        assert!(matches!(
            run.log[0],
            Entry::Started {
                definition_version: 1,
                ..
            }
        ));

        // The second version is deployed: the saga resumes from its log under the first and
        // finishes its steps in the first one's order.
        let resumed = WITH_V2
            .resume(&run.log)
            .expect("the first version is still there");
        assert_eq!(resumed, run.saga);
        assert_eq!(resumed.definition, &flows::ORDER_TO_PAYMENT_V1);
        run.saga = resumed;
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.saga.status, Status::Completed);
        assert_eq!(
            forward_steps(&run),
            [
                Step::ReserveBudget,
                Step::AssignCommission,
                Step::RequestPayment,
                Step::ConfirmTracking
            ]
        );
        crate::replay::replay(&WITH_V2, &run.log).expect("its log replays under its version");

        // A saga started now runs the second version, and its log says so.
        let definition = WITH_V2
            .latest(SagaType::OrderToPayment)
            .expect("a definition");
        assert_eq!(definition, &ORDER_TO_PAYMENT_V2);
        let mut new = Run::start_with(definition);
        new.drive(|_| Answering::Succeed);
        assert!(matches!(
            new.log[0],
            Entry::Started {
                definition_version: 2,
                ..
            }
        ));
        assert_eq!(
            forward_steps(&new),
            [
                Step::ReserveBudget,
                Step::AssignCommission,
                Step::ConfirmTracking,
                Step::RequestPayment
            ]
        );
        crate::replay::replay(&WITH_V2, &new.log).expect("replays under the second version");

        // Under the second version, the first saga's log diverges where the orders part; and a
        // catalogue without the first version cannot resume it at all.
        let mut as_v2 = run.log.clone();
        if let Entry::Started {
            definition_version, ..
        } = &mut as_v2[0]
        {
            *definition_version = 2;
        }
        let Err(crate::replay::Failure::Divergence(divergence)) =
            crate::replay::replay(&WITH_V2, &as_v2)
        else {
            panic!("the first version's log does not replay under the second");
        };
        assert!(matches!(
            divergence.replayed.as_deref(),
            Some(Entry::StepCommandSent { sent, .. }) if sent.step == Step::ConfirmTracking
        ));
        assert_eq!(
            ONLY_V2.resume(&run.log),
            Err(Unknown::Version {
                saga_type: "order-to-payment",
                version: 1
            })
        );
    }

    #[test]
    fn a_refund_takes_back_what_the_order_saga_created_and_undoes_it_in_reverse() {
        let order_saga = schemas::ids::saga_id_for(Uuid::from_u128(4));
        let of_the_order = |what: &str| Uuid::new_v5(&order_saga, what.as_bytes());
        let mut run = Run::start(SagaType::OrderRefund);
        // The commission is taken back and the payout clawed back; the campaign refuses to
        // release the budget.
        run.drive_phased(|sent, compensating| match sent.command {
            Command::ReleaseBudget { .. } if !compensating => Answering::Reject,
            _ => Answering::Succeed,
        });
        assert_eq!(run.saga.status, Status::Compensated);
        let sent: Vec<&Command> = crate::replay::commands(&run.log)
            .map(|sent| &sent.command)
            .collect();
        let refund = Uuid::from_u128(1);
        assert_eq!(
            sent,
            [
                &Command::ReverseCommission {
                    commission_id: of_the_order("commission"),
                    reason: "order o-1 refunded".into(),
                },
                &Command::ClawBack {
                    clawback_id: run.saga.derived_id("clawback"),
                    payment_id: of_the_order("payment"),
                    reason: "order o-1 refunded".into(),
                },
                &Command::ReleaseBudget {
                    reservation_id: of_the_order("reservation"),
                    campaign_id: Uuid::from_u128(2),
                    reason: "order o-1 refunded".into(),
                },
                &Command::CancelClawBack {
                    clawback_id: run.saga.derived_id("clawback"),
                    payment_id: of_the_order("payment"),
                    reason: "release-budget rejected: scripted".into(),
                },
                &Command::ReinstateCommission {
                    commission_id: of_the_order("commission"),
                    reason: "release-budget rejected: scripted".into(),
                },
                &Command::FailTracking {
                    tracking_id: refund,
                    reason: "release-budget rejected: scripted".into(),
                },
            ]
        );
        assert_replays(&run);
    }

    /// A flow whose budget reservation has nothing to undo.
    static NOTHING_TO_UNDO: Definition = Definition {
        saga_type: SagaType::OrderToPayment,
        version: 9,
        steps: &[
            StepDefinition {
                undo: Some(|_, _, _| None),
                ..flows::RESERVE_BUDGET
            },
            flows::ASSIGN_COMMISSION,
        ],
    };

    #[test]
    fn a_step_with_nothing_to_undo_counts_as_undone_and_compensation_goes_on() {
        let mut run = Run::start_with(&NOTHING_TO_UNDO);
        run.drive(|sent| match sent.command {
            Command::AssignCommission { .. } => Answering::Reject,
            _ => Answering::Succeed,
        });
        assert_eq!(run.saga.status, Status::Compensated);
        assert_eq!(run.compensations(), [Step::Trigger]);
        assert!(run.log.iter().any(|e| matches!(
            e,
            Entry::CompensationSucceeded { step: Step::ReserveBudget, command_id, .. }
                if command_id.is_nil()
        )));
        static ITS_CATALOGUE: Catalogue = Catalogue(&[&NOTHING_TO_UNDO]);
        let replayed = crate::replay::replay(&ITS_CATALOGUE, &run.log).expect("replays");
        assert_eq!(replayed, run.saga);
    }

    #[test]
    fn a_refund_step_is_sent_again_until_it_answers_and_never_undone_meanwhile() {
        let mut run = Run::start(SagaType::OrderRefund);
        for attempt in 1..=8 {
            let sent = run.saga.pending.clone().expect("the reversal");
            assert_eq!(
                (sent.step, sent.attempt),
                (Step::ReverseCommission, attempt)
            );
            assert!(sent.timeout <= MAX_RETRY_WAIT);
            run.time_out(&sent);
            assert_eq!(run.saga.status, Status::Running, "nothing is undone");
        }
        run.drive(|_| Answering::Succeed);
        assert_eq!(run.saga.status, Status::Completed);
        assert!(run.compensations().is_empty());
        assert_replays(&run);
    }
}
