//! Interop with Python's fastavro from the `.avsc` files alone: Rust writes a sample of every
//! message type and event variant for `tests/interop.py` to read, and reads what it writes back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::samples;

fn python() -> String {
    std::env::var("PULSAGA_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PULSAGA_PYTHON is unset: point it at a Python with fastavro \
             (scripts/setup.sh makes .venv and exports it)"
        )
    })
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("creates the directory");
    fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn fastavro_reads_what_rust_writes_and_rust_reads_what_fastavro_writes() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop");
    if work.exists() {
        fs::remove_dir_all(&work).expect("clears the last run");
    }
    let samples = samples::all();
    for (i, sample) in samples.iter().enumerate() {
        let stem = work
            .join("rust")
            .join(sample.topic.name)
            .join(format!("{i:02}-{}", sample.message_type));
        write(&stem.with_extension("avro"), &sample.bytes);
        write(&stem.with_extension("json"), sample.json.to_string());
    }

    let output = Command::new(python())
        .arg(crate_dir.join("tests/interop.py"))
        .arg(crate_dir.join("avro"))
        .arg(&work)
        .output()
        .expect("PULSAGA_PYTHON runs");
    assert!(
        output.status.success(),
        "interop.py failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let mut read = 0;
    for (i, sample) in samples.iter().enumerate() {
        let stem = work
            .join("python")
            .join(sample.topic.name)
            .join(format!("{i:02}-{}", sample.message_type));
        let bytes = fs::read(stem.with_extension("avro")).expect("interop.py wrote the sample");
        let expected: serde_json::Value = serde_json::from_slice(
            &fs::read(stem.with_extension("json")).expect("interop.py wrote the expectation"),
        )
        .expect("valid JSON");
        let decoded = (sample.decode)(&bytes, sample.topic.version())
            .unwrap_or_else(|e| panic!("{}: {e}", stem.display()));
        assert_eq!(decoded, expected, "{}", stem.display());
        assert_ne!(decoded, sample.json, "interop.py changed every value");
        read += 1;
    }
    assert_eq!(read, samples.len());
}
