//! What operators run beside copydesk (`ops/`): the Prometheus alert rules pass
//! `promtool check rules` and their own unit tests (`promtool test rules`, Debian's
//! `prometheus` package), and every metric the rules and the Grafana dashboard name is
//! one a real `copydesk worker` serves at /metrics.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(format!("{ROOT}/ops/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool does not run ({e}): apt-get install prometheus (what .ci/run does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_and_fire_when_their_tests_say() {
    let checked = promtool(&["check", "rules", "copydesk.rules.yml"]);
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "copydesk.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The `copydesk_…` metric families an expression names (a histogram's `_bucket`,
/// `_sum` and `_count` are its family).
fn metrics_named(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("copydesk_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        names.insert(family);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_served_by_a_real_worker() {
    // What the rules and the dashboard name.
    let rules =
        std::fs::read_to_string(format!("{ROOT}/ops/prometheus/copydesk.rules.yml")).unwrap();
    let mut named: BTreeSet<String> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(metrics_named)
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/ops/grafana/copydesk-queue.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            named.extend(metrics_named(t["expr"].as_str().unwrap()));
        }
    }
    assert!(named.len() >= 6, "{named:?}");

    // What a worker serves once it has run a job.
    let db = test_db().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _worker = spawn_worker(&db, &["--http", &format!("127.0.0.1:{port}")], &[]);
    let job: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    wait_for(Duration::from_secs(30), "the job done", || async {
        status_of(&db.pool, job).await == "done"
    })
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let scrape = || async {
        let Ok(res) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        else {
            return BTreeSet::new();
        };
        let text = res.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect::<BTreeSet<String>>()
    };
    wait_for(
        Duration::from_secs(30),
        "/metrics serving every family",
        || async { named.is_subset(&scrape().await) },
    )
    .await;
    let served = scrape().await;
    let missing: Vec<&String> = named.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "named but not served: {missing:?}; served: {served:?}"
    );
}
