//! Saga definitions as data: a definition names a saga type's steps in order, and for each step
//! the command it sends, how long it waits for the answer and how often it asks, the command
//! that undoes it, and (for a pivot) the question that settles whether it may still complete.
//! The answers a step waits for are the same for every step: success, rejection, or silence
//! past its timeout. The coordinator runs any definition of the catalogue it is given.
//!
//! Definitions carry a version. A saga keeps the version it started with until it ends (its
//! log's first entry records it), so a changed flow is a new version beside the old one, and
//! the old one stays in the catalogue while sagas of it may be in flight.

use super::{Command, Entry, Saga, SagaData, SagaType, Step};
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

/// How long a step's command may go unanswered, and how often it is sent before the step counts
/// as timed out (a resend carries the same command id, so a service that did get it ignores it);
/// `u32::MAX` attempts: never, it is sent until it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub timeout: Duration,
    pub attempts: u32,
}

/// Builds a step's command from the saga (its derived ids, the amount it carries) and its data;
/// none when it cannot be built.
pub type Build = fn(&Saga, &SagaData) -> Option<Command>;

/// Builds the command that undoes a step, given why; none when it cannot be built from the
/// saga's data (then there is nothing to undo, and the compensation goes on).
pub type Undo = fn(&Saga, &SagaData, String) -> Option<Command>;

/// Builds a pivot's settling question, given why.
pub type Ask = fn(&Saga, &SagaData, String) -> Command;

/// One step of a definition.
#[derive(Debug, Clone, Copy)]
pub struct StepDefinition {
    pub step: Step,
    pub policy: Policy,
    pub command: Build,
    /// What undoes the step; none: nothing can (a payout that went out, a confirmation).
    pub undo: Option<Undo>,
    /// A pivot is never compensated while it may still complete: after its last timeout the
    /// saga asks instead of assuming. Past a pivot nothing is undone: later steps are sent again
    /// until they answer.
    pub pivot: Option<Pivot>,
}

/// A pivot's question after its command went unanswered, and how its answers read.
#[derive(Debug, Clone, Copy)]
pub struct Pivot {
    /// Cancel it unless it happened. Its success says it never will, and is recorded as the
    /// step's failure with this code and reason.
    pub ask: Ask,
    pub cancelled: (&'static str, &'static str),
    /// Refusal codes that say it never will happen either.
    pub never: &'static [&'static str],
    /// Refusal codes that say it happened: the step succeeded. Any other refusal says it is in
    /// flight, and the question is asked again when it times out.
    pub happened: &'static [&'static str],
}

impl StepDefinition {
    /// The timeout of a forward `attempt` (1-based): the step's own, doubling with each attempt
    /// up to `MAX_RETRY_WAIT`, so that a service's outage or backlog is waited out longer each
    /// time before the saga gives the step up (or, past the pivot, for as long as it takes).
    pub fn forward_timeout(&self, attempt: u32) -> Duration {
        self.compensation_timeout(attempt)
            .min(super::MAX_RETRY_WAIT)
    }

    /// The timeout of a compensation's `attempt` (1-based): doubling from the step's own.
    pub fn compensation_timeout(&self, attempt: u32) -> Duration {
        self.policy
            .timeout
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }

    pub fn is_pivot(&self) -> bool {
        self.pivot.is_some()
    }
}

/// A saga type's flow in one version.
pub struct Definition {
    pub saga_type: SagaType,
    pub version: u32,
    pub steps: &'static [StepDefinition],
}

/// The compensation of a saga's trigger, common to every flow: its tracking event is failed
/// with the reason. Its policy times the trigger's compensation.
pub const TRIGGER: StepDefinition = StepDefinition {
    step: Step::Trigger,
    policy: Policy {
        timeout: Duration::from_secs(10),
        attempts: 3,
    },
    command: |_, _| None,
    undo: Some(|_, data, reason| {
        Some(Command::FailTracking {
            tracking_id: data.tracking_id,
            reason,
        })
    }),
    pivot: None,
};

impl Definition {
    /// The definition of `step` (the trigger's for [`Step::Trigger`]); none if the flow has no
    /// such step.
    pub fn step(&self, step: Step) -> Option<&StepDefinition> {
        if step == Step::Trigger {
            return Some(&TRIGGER);
        }
        self.steps.iter().find(|s| s.step == step)
    }

    /// The forward steps' names, in order, then the trigger's: what the console shows.
    pub fn step_names(&self) -> Vec<Step> {
        self.steps
            .iter()
            .map(|s| s.step)
            .chain([Step::Trigger])
            .collect()
    }
}

/// Two definitions are the same when type and version are: a version is never changed.
impl PartialEq for Definition {
    fn eq(&self, other: &Self) -> bool {
        (self.saga_type, self.version) == (other.saga_type, other.version)
    }
}

impl Eq for Definition {}

impl fmt::Debug for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.saga_type.name(), self.version)
    }
}

/// A saga's log names a definition the catalogue does not hold (or it has no start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("the saga log does not begin with its start")]
    NoStart,
    #[error("the saga started with {saga_type} v{version}, which this coordinator does not have")]
    Version {
        saga_type: &'static str,
        version: u32,
    },
}

/// The definitions a coordinator runs: every version of every flow that sagas in flight may
/// have started with. New sagas start with the latest version of their type.
#[derive(Debug)]
pub struct Catalogue(pub &'static [&'static Definition]);

impl Catalogue {
    pub fn latest(&self, saga_type: SagaType) -> Option<&'static Definition> {
        self.0
            .iter()
            .copied()
            .filter(|d| d.saga_type == saga_type)
            .max_by_key(|d| d.version)
    }

    pub fn get(&self, saga_type: SagaType, version: u32) -> Option<&'static Definition> {
        self.0
            .iter()
            .copied()
            .find(|d| d.saga_type == saga_type && d.version == version)
    }

    /// The saga a log is of, and the definition its start names.
    pub fn started(&self, log: &[Entry]) -> Result<(Uuid, &'static Definition), Unknown> {
        let Some(Entry::Started {
            saga_id,
            saga_type,
            definition_version: version,
            ..
        }) = log.first()
        else {
            return Err(Unknown::NoStart);
        };
        let definition = self.get(*saga_type, *version).ok_or(Unknown::Version {
            saga_type: saga_type.name(),
            version: *version,
        })?;
        Ok((*saga_id, definition))
    }

    /// The saga a log folds to, under the definition its start names.
    pub fn resume(&self, log: &[Entry]) -> Result<Saga, Unknown> {
        let (saga_id, definition) = self.started(log)?;
        let mut saga = Saga::new(saga_id, definition);
        for entry in log {
            saga.apply(entry);
        }
        Ok(saga)
    }
}
