//! Tidy checks that keep the architecture honest: crate dependencies follow the allowed edges of
//! STYLE.md, only `messaging` depends on `pulsar`, and every Rust file says what it is for in a
//! `//!` line.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which workspace crates each crate may depend on (normal, build and dev dependencies alike).
fn allowed_edges() -> BTreeMap<&'static str, &'static [&'static str]> {
    const SERVICE: &[&str] = &["schemas", "eventstore", "messaging"];
    // Every crate but the binary, in layers: the shared crates, the services and the
    // coordinator, the API, the table of the platform's services, the tests' harness.
    static CRATES: [&str; 11] = [
        "schemas",
        "eventstore",
        "messaging",
        "campaigns",
        "tracking",
        "commissions",
        "payments",
        "sagas",
        "bff",
        "pulsaga-platform",
        "pulsaga-tests",
    ];
    BTreeMap::from([
        ("schemas", &[][..]),
        ("eventstore", &[][..]),
        ("messaging", &["schemas", "eventstore"][..]),
        ("campaigns", SERVICE),
        ("tracking", SERVICE),
        ("commissions", SERVICE),
        ("payments", SERVICE),
        ("sagas", SERVICE),
        ("bff", &["schemas", "messaging"][..]),
        // The table of the platform's services, which the binary and the tests' platform run.
        ("pulsaga-platform", &CRATES[2..9]),
        // The binary's own tests run the platform harness of `tests/` around it.
        ("pulsaga", &CRATES[..]),
        ("pulsaga-tests", &CRATES[..10]),
    ])
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// Every dependency edge between workspace crates that the rules do not allow, and every
/// workspace crate the rules do not know.
fn forbidden_edges(metadata: &Value) -> Vec<String> {
    let allowed = allowed_edges();
    let packages = metadata["packages"].as_array().expect("packages");
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(may_use) = allowed.get(name) else {
            problems.push(format!(
                "{name} is not in the tidy test's table of allowed edges"
            ));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let used = dependency["name"].as_str().unwrap_or_default();
            // A crate may name itself as a dev-dependency, to test with a feature turned on.
            let itself = used == name && dependency["kind"] == "dev";
            if members.contains(&used) && !may_use.contains(&used) && !itself {
                problems.push(format!("{name} depends on {used}"));
            }
        }
    }
    problems
}

#[test]
fn crates_depend_only_along_the_allowed_edges() {
    let metadata = cargo_metadata();
    let names: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names.len(),
        allowed_edges().len(),
        "every crate of the table is in the workspace: {names:?}"
    );
    assert_eq!(forbidden_edges(&metadata), Vec::<String>::new());
}

#[test]
fn a_forbidden_edge_is_reported() {
    let metadata = serde_json::json!({ "packages": [
        { "name": "campaigns", "dependencies": [{ "name": "schemas" }, { "name": "payments" }, { "name": "serde" }] },
        { "name": "payments", "dependencies": [] },
        { "name": "schemas", "dependencies": [] },
        { "name": "helpers", "dependencies": [] },
    ]});
    assert_eq!(
        forbidden_edges(&metadata),
        [
            "campaigns depends on payments",
            "helpers is not in the tidy test's table of allowed edges"
        ]
    );
}

/// The workspace crates that depend on the `pulsar` crate themselves: the broker's client is
/// `messaging`'s business alone, so that a broker kind or a client upgrade touches one crate.
fn pulsar_users(metadata: &Value) -> Vec<String> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["name"] == "pulsar")
        })
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn only_messaging_imports_pulsar() {
    assert_eq!(pulsar_users(&cargo_metadata()), ["messaging"]);
    let leak = serde_json::json!({ "packages": [
        { "name": "messaging", "dependencies": [{ "name": "pulsar" }] },
        { "name": "bff", "dependencies": [{ "name": "pulsar" }, { "name": "messaging" }] },
    ]});
    assert_eq!(
        pulsar_users(&leak),
        ["messaging", "bff"],
        "the check can fail"
    );
}

/// Integration-test targets that share a name with another crate's. `#[sqlx::test]` names a
/// test's database after its module path, which starts with the target name; two crates with
/// `tests/it` and a test at the same path would share (and break) one database.
fn shared_test_target_names(metadata: &Value) -> Vec<String> {
    let mut names: Vec<String> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    let mut shared: Vec<String> = names
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].clone())
        .collect();
    shared.dedup();
    shared
}

#[test]
fn integration_test_targets_have_workspace_unique_names() {
    assert_eq!(
        shared_test_target_names(&cargo_metadata()),
        Vec::<String>::new()
    );
    let clash = serde_json::json!({ "packages": [
        { "targets": [{ "name": "it", "kind": ["test"] }, { "name": "a", "kind": ["lib"] }] },
        { "targets": [{ "name": "it", "kind": ["test"] }, { "name": "a", "kind": ["lib"] }] },
    ]});
    assert_eq!(
        shared_test_target_names(&clash),
        ["it"],
        "the check can fail"
    );
}

/// The Rust files under `dir` whose first line is not a `//!` line.
fn files_without_purpose(dir: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).expect("read file");
                if !text.starts_with("//!") {
                    missing.push(path);
                }
            }
        }
    }
    missing.sort();
    missing
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    assert_eq!(
        files_without_purpose(&workspace_root()),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn a_file_without_a_purpose_line_is_reported() {
    let dir = std::env::temp_dir().join(format!("pulsaga-tidy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).expect("temp dir");
    std::fs::write(
        dir.join("src/good.rs"),
        "//! Says what it is for.\nfn f() {}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("src/bad.rs"),
        "// an ordinary comment\nfn f() {}\n",
    )
    .expect("write");
    let found = files_without_purpose(&dir);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(found, [dir.join("src/bad.rs")]);
}
