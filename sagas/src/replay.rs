//! The replayer: runs a recorded saga log against the current definitions and says where they
//! part. A saga is resumed from its log, so a definition that decides differently on a recorded
//! history breaks the sagas in flight; `tests/fixtures/saga-logs/` holds recorded histories of
//! the flows, and the replayer test fails the build on a divergence.

use crate::definition::{Answer, Entry, Input, Saga, Sent};

/// Where a replay parted from the recorded log: the first entry that differs (`None` on one
/// side: that log is shorter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the replay diverges at entry {at}: recorded {recorded:?}, replayed {replayed:?}")]
pub struct Divergence {
    pub at: usize,
    pub recorded: Option<Box<Entry>>,
    pub replayed: Option<Box<Entry>>,
}

/// Feeds the inputs `log` records, in order, to a fresh saga of its type, and compares what the
/// saga decides with what was recorded, entry by entry. The saga it comes to, or the first
/// difference.
pub fn replay(log: &[Entry]) -> Result<Saga, Divergence> {
    let diverged = |at: usize, replayed: Option<&Entry>| Divergence {
        at,
        recorded: log.get(at).cloned().map(Box::new),
        replayed: replayed.cloned().map(Box::new),
    };
    let Some(Entry::Started {
        saga_id, saga_type, ..
    }) = log.first()
    else {
        return Err(diverged(0, None));
    };
    let mut saga = Saga::new(*saga_id, *saga_type);
    let mut at = 0;
    for input in log.iter().filter_map(input_of) {
        for entry in saga.on_input(&input) {
            if log.get(at) != Some(&entry) {
                return Err(diverged(at, Some(&entry)));
            }
            saga.apply(&entry);
            at += 1;
        }
    }
    if at < log.len() {
        return Err(diverged(at, None));
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
/// back into [`Saga::on_input`].
pub fn input_of(entry: &Entry) -> Option<Input> {
    Some(match entry {
        Entry::Started {
            saga_id,
            saga_type,
            data,
            at,
        } => Input::Start {
            saga_id: *saga_id,
            saga_type: *saga_type,
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
        } => Input::Timeout {
            command_id: *command_id,
            attempt: *attempt,
            at: *at,
        },
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
