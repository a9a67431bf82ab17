//! The clients other services use (`clients/python`, `clients/typescript`): their types
//! are what the job schemas make, and their own test suites pass against a real
//! Postgres migrated by copydesk, with the real `copydesk` binary running what they
//! enqueue.

mod common;

use std::process::Command;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_clients_types_are_what_the_job_schemas_make() {
    let out = Command::new("python3")
        .arg(format!("{ROOT}/clients/generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pytest over `clients/python/tests` with a fresh database of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_tests_pass_against_a_real_database_and_worker() {
    let env = python_env();
    let db = test_db().await;
    let out = Command::new(env.join("bin/pytest"))
        .args([
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::pytest.PytestUnraisableExceptionWarning",
        ])
        .current_dir(format!("{ROOT}/clients/python"))
        .env("COPYDESK_TEST_DATABASE_URL", &db.url)
        .env("COPYDESK_BIN", env!("CARGO_BIN_EXE_copydesk"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}
