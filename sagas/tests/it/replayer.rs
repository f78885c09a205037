//! Recorded saga histories, replayed against today's definitions (the version each started
//! with): a change that would decide differently on a saga in flight fails here.
//! `tests/fixtures/saga-logs/` holds the three flows' logs as stored (one entry per line):
//! completed and compensated sagas recorded by a `pulsaga chaos` platform and by `pulsaga demo`
//! (an order paid, then refunded), and timeouts, resends, refusals, parking and operator actions
//! recorded from the definitions' own scenarios.

use sagas::definition::{CATALOGUE, Entry, SagaType};
use sagas::replay::{Divergence, Failure, replay};
use std::path::PathBuf;

fn fixtures() -> Vec<(String, Vec<Entry>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saga-logs");
    let mut logs: Vec<(String, Vec<Entry>)> = std::fs::read_dir(&dir)
        .expect("the fixtures")
        .map(|file| {
            let path = file.expect("a fixture").path();
            let text = std::fs::read_to_string(&path).expect("read a fixture");
            let log = text
                .lines()
                .map(|line| {
                    sagas::wire::decode_entry(line.as_bytes())
                        .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()))
                })
                .collect();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                log,
            )
        })
        .collect();
    logs.sort_by(|a, b| a.0.cmp(&b.0));
    logs
}

#[test]
fn every_recorded_history_replays_to_the_same_log() {
    let logs = fixtures();
    assert!(logs.len() >= 17, "the fixtures are there: {}", logs.len());
    for (name, log) in &logs {
        replay(&CATALOGUE, log).unwrap_or_else(|failure| panic!("{name}: {failure}"));
    }
    for flow in [
        SagaType::CommissionAssignment,
        SagaType::OrderToPayment,
        SagaType::OrderRefund,
    ] {
        assert!(
            logs.iter().any(
                |(_, log)| matches!(log[0], Entry::Started { saga_type, .. } if saga_type == flow)
            ),
            "{flow:?} is recorded"
        );
    }
}

#[test]
fn every_recorded_entry_is_stored_again_as_it_was() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saga-logs");
    for file in std::fs::read_dir(&dir).expect("the fixtures") {
        let path = file.expect("a fixture").path();
        for line in std::fs::read_to_string(&path).expect("read").lines() {
            let entry = sagas::wire::decode_entry(line.as_bytes()).expect("decodes");
            let again: serde_json::Value =
                serde_json::from_slice(&sagas::wire::encode_entry(&entry)).expect("JSON");
            let mut recorded: serde_json::Value = serde_json::from_str(line).expect("JSON");
            if recorded["entry"] == "started" && recorded.get("definition_version").is_none() {
                // Recorded before definitions had versions: it ran the first.
                recorded["definition_version"] = 1.into();
            }
            assert_eq!(again, recorded, "{}", path.display());
        }
    }
}

#[test]
fn a_definition_that_decides_otherwise_is_caught_where_it_parts() {
    let (name, mut log) = fixtures()
        .into_iter()
        .find(|(name, _)| name == "order-to-payment-completed.jsonl")
        .expect("the completed order");
    // As if today's definition waited longer for the budget than the one that recorded this.
    let Entry::StepCommandSent { sent, .. } = &mut log[1] else {
        panic!("{name}: the reservation is sent second");
    };
    sent.timeout *= 2;
    let divergence = diverging(&log, "a changed timeout diverges");
    assert_eq!(divergence.at, 1, "{divergence}");

    let mut shorter = fixtures().swap_remove(0).1;
    shorter.push(shorter[1].clone());
    let divergence = diverging(&shorter, "an entry the definition never decides");
    assert_eq!(divergence.at, shorter.len() - 1);
    assert_eq!(divergence.replayed, None);
}

fn diverging(log: &[Entry], why: &str) -> Divergence {
    match replay(&CATALOGUE, log) {
        Err(Failure::Divergence(divergence)) => divergence,
        other => panic!("{why}: {other:?}"),
    }
}
