//! Architecture check: the protocol crate and the client's sync core stay sans-IO.
//!
//! `cargo tree` lists the normal (non-dev) dependency graph; neither crate may reach an async runtime, a database,
//! an HTTP client or a socket library, directly or transitively.

use std::process::Command;

const FORBIDDEN: [&str; 6] = ["tokio", "rusqlite", "reqwest", "hyper", "axum", "tungstenite"];

fn normal_dependencies(package: &str) -> String {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--package", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

#[test]
fn protocol_and_sync_core_do_no_io() {
    for package in ["livestore-proto", "livestore-core"] {
        let tree = normal_dependencies(package);
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            assert!(!FORBIDDEN.contains(&name), "{package} depends on {name}:\n{tree}");
        }
    }
}
