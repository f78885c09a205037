//! The replayer: runs a recorded saga log against the current definitions and says where they
//! part. A saga is resumed from its log, so a definition that decides differently on a recorded
//! history breaks the sagas in flight; `tests/fixtures/saga-logs/` holds recorded histories of
//! the flows, and the replayer test fails the build on a divergence.

use crate::definition::{Entry, Saga};

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
    for input in log.iter().filter_map(Saga::input_of) {
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
