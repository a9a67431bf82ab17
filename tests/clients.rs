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

/// Runs a client's test suite in `dir` with a fresh database of its own, the real
/// binary and one set of Fernet keys; fails with its output.
async fn suite(dir: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) {
    let db = test_db().await;
    let out = Command::new(program)
        .args(args)
        .current_dir(format!("{ROOT}/{dir}"))
        .env("COPYDESK_TEST_DATABASE_URL", &db.url)
        .env("COPYDESK_BIN", env!("CARGO_BIN_EXE_copydesk"))
        // One key for every process the suite starts (Node runs each file in its own).
        .env("COPYDESK_FERNET_KEYS", copydesk::keys::Keys::generate())
        .env_remove("DATABASE_URL")
        .output()
        .expect("the test runner starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the tests in {dir} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}

/// pytest over `clients/python/tests`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_tests_pass_against_a_real_database_and_worker() {
    let pytest = python_env().join("bin/pytest");
    suite("clients/python", pytest, &["-q", "-p", "no:cacheprovider"]).await;
}

/// Node's test runner over `clients/typescript/test`, compiled by `tsc` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_clients_tests_pass_against_a_real_database_and_worker() {
    assert!(
        std::path::Path::new(ROOT)
            .join("clients/typescript/node_modules/.bin/tsc")
            .exists(),
        "no node_modules in clients/typescript: run `npm ci` there (what .ci/run does) first"
    );
    suite("clients/typescript", "npm", &["test", "--silent"]).await;
}
