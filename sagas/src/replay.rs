//! The replayer: runs a recorded saga log against a catalogue's definitions (the version its
//! log started with) and says where they part. A saga is resumed from its log, so a definition
//! that decides differently on a recorded history breaks the sagas in flight: a change is a new
//! version. `tests/fixtures/saga-logs/` holds recorded histories of the flows, and the replayer
//! test fails the build on a divergence.

use crate::definition::{Answer, Catalogue, Definition, Entry, Input, Saga, Sent, Unknown};

/// Why a recorded log does not replay.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// The catalogue lacks the definition the log started with.
    #[error(transparent)]
    Unknown(#[from] Unknown),
    #[error(transparent)]
    Divergence(#[from] Divergence),
}

/// Where a replay parted from the recorded log: the first entry that differs (`None` on one
/// side: that log is shorter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the replay diverges at entry {at}: recorded {recorded:?}, replayed {replayed:?}")]
pub struct Divergence {
    pub at: usize,
    pub recorded: Option<Box<Entry>>,
    pub replayed: Option<Box<Entry>>,
}

/// Feeds the inputs `log` records, in order, to a fresh saga of the definition it started with,
/// and compares what the saga decides with what was recorded, entry by entry. The saga it comes
/// to, or the first difference.
pub fn replay(catalogue: &Catalogue, log: &[Entry]) -> Result<Saga, Failure> {
    let diverged = |at: usize, replayed: Option<&Entry>| Divergence {
        at,
        recorded: log.get(at).cloned().map(Box::new),
        replayed: replayed.cloned().map(Box::new),
    };
    let (saga_id, definition) = catalogue.started(log)?;
    let mut saga = Saga::new(saga_id, definition);
    let mut at = 0;
    for input in log.iter().filter_map(|entry| input_of(definition, entry)) {
        for entry in saga.on_input(&input) {
            if log.get(at) != Some(&entry) {
                return Err(diverged(at, Some(&entry)).into());
            }
            saga.apply(&entry);
            at += 1;
        }
    }
    if at < log.len() {
        return Err(diverged(at, None).into());
    }
    Ok(saga)
}

/// The commands a log sent, forward and compensating, in order: once [`replay`] accepts the
/// log, exactly the commands today's definitions send on its inputs.
pub fn commands(log: &[Entry]) -> impl Iterator<Item = &Sent> {
    log.iter().filter_map(|entry| match entry {
        Entry::StepCommandSent { sent, .. } | Entry::CompensationCommandSent { sent, .. } => {
            Some(sent)
        }
        _ => None,
    })
}

/// The input an entry records, if it is the first entry an input caused: what a replay feeds
/// back into [`Saga::on_input`]. A start is fed with `definition`, the one the log names.
pub fn input_of(definition: &'static Definition, entry: &Entry) -> Option<Input> {
    Some(match entry {
        Entry::Started {
            saga_id, data, at, ..
        } => Input::Start {
            saga_id: *saga_id,
            definition,
            data: data.clone(),
            at: *at,
        },
        Entry::StepSucceeded {
            command_id,
            message_id,
            amount,
            at,
            ..
        } => Input::Reply {
            command_id: *command_id,
            message_id: *message_id,
            answer: Answer::Succeeded {
                amount: amount.clone(),
            },
            at: *at,
        },
        Entry::StepFailed {
            command_id,
            message_id,
            code,
            reason,
            at,
            ..
        } => Input::Reply {
            command_id: *command_id,
            message_id: *message_id,
            answer: Answer::Rejected {
                code: code.clone(),
                reason: reason.clone(),
            },
            at: *at,
        },
        Entry::StepTimedOut {
            command_id,
            attempt,
            at,
            ..
        }
        | Entry::CompensationFailed {
            command_id,
            attempt,
            message_id: None,
            at,
            ..
        }
        | Entry::CompensationRetryDue {
            command_id,
            attempt,
            at,
            ..
        } => Input::Timeout {
            command_id: *command_id,
            attempt: *attempt,
            at: *at,
        },
        Entry::CompensationSucceeded { .. } | Entry::CompensationFailed { .. } => {
            return compensation_input(entry);
        }
        Entry::OperatorActed {
            action,
            actor,
            reason,
            at,
        } => Input::Operator {
            action: *action,
            actor: actor.clone(),
            reason: reason.clone(),
            at: *at,
        },
        _ => return None,
    })
}

/// [`input_of`] for a compensation's answers. A compensation counted as done without a command
/// (skipped) records no input.
fn compensation_input(entry: &Entry) -> Option<Input> {
    Some(match entry {
        Entry::CompensationSucceeded {
            command_id,
            message_id,
            at,
            ..
        } if !command_id.is_nil() => Input::Reply {
            command_id: *command_id,
            message_id: *message_id,
            answer: Answer::Succeeded { amount: None },
            at: *at,
        },
        Entry::CompensationFailed {
            command_id,
            message_id: Some(message_id),
            reason,
            at,
            ..
        } => {
            let (code, reason) = reason.split_once(": ").unwrap_or((reason.as_str(), ""));
            Input::Reply {
                command_id: *command_id,
                message_id: *message_id,
                answer: Answer::Rejected {
                    code: code.to_owned(),
                    reason: reason.to_owned(),
                },
                at: *at,
            }
        }
        _ => return None,
    })
}
