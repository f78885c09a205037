//! The workspace-wide tests: tidy checks on the code base itself, and end-to-end scenarios across
//! every service and the saga coordinator.

mod api;
mod python_client;
mod sagas_end_to_end;
mod tidy;

use serde_json::Value;

/// Asserts that a compensation log starts for `reason` and undoes the order-to-payment saga's
/// steps once each, in reverse order.
fn assert_unwound_for(log: &Value, reason: &str) {
    let entries = log["compensations"].as_array().expect("compensation log");
    assert_eq!(entries[0]["entry"], "compensation_started", "{log}");
    assert!(
        entries[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(reason)),
        "the reason is named: {}",
        entries[0]
    );
    let compensated: Vec<&str> = entries
        .iter()
        .filter(|e| e["entry"] == "compensation_succeeded")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(
        compensated,
        ["assign-commission", "reserve-budget", "trigger"],
        "each once, in reverse order"
    );
    assert_eq!(
        entries.last().map(|e| &e["entry"]),
        Some(&Value::from("compensated"))
    );
}
