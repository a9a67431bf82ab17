//! Notifications raised by their real causes, in their cause's transaction: a job that
//! fails for good and an approval the pipeline creates; repeats of a cause counted on
//! one row; nothing for a transaction that rolled back; the CLI lists and marks them
//! read.

mod common;

use common::*;
use copydesk::{
    app,
    queue::{self, NewJob, runner::run_once},
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

/// The notifications of `db`: (kind, severity, count, job, title).
async fn notifications(db: &TestDb) -> Vec<(String, String, i32, Option<Uuid>, String)> {
    sqlx::query_as(
        "SELECT kind, severity, count, job_id, title FROM notifications ORDER BY created_at, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn noop(db: &TestDb, input: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', $1::jsonb) RETURNING id")
        .bind(input)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Fails a job for good with `error` by plain SQL, as an operator's script might.
async fn fail(db: &TestDb, id: Uuid, error: &str) {
    sqlx::query("UPDATE jobs SET status = 'failed', last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(error)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_failing_for_good_raise_one_notification_per_cause_with_a_count() {
    let db = test_db().await;
    let r = runner(&db, fast_settings(), app::registry());
    // Two jobs with the same bad input (inserted by plain SQL, which checks nothing):
    // each fails for good on its first run, with the same error.
    let first = noop(&db, r#"{"sleep_ms": "soon"}"#).await;
    let second = noop(&db, r#"{"sleep_ms": "soon"}"#).await;
    while run_once(&r, &["noop"]).await.unwrap().is_some() {}
    assert_eq!(status_of(&db.pool, first).await, "failed");
    assert_eq!(status_of(&db.pool, second).await, "failed");
    let rows = notifications(&db).await;
    assert_eq!(rows.len(), 1, "one cause, one row: {rows:?}");
    let (kind, severity, count, job, title) = &rows[0];
    assert_eq!(
        (kind.as_str(), severity.as_str(), *count),
        ("job_failed", "error", 2)
    );
    assert!([Some(first), Some(second)].contains(job), "{job:?}");
    assert_eq!(title, "A noop job failed for good");

    // A failure in a transaction that rolled back raises nothing.
    let fine = noop(&db, "{}").await;
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE jobs SET status = 'failed', last_error = 'made up' WHERE id = $1")
        .bind(fine)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(notifications(&db).await.len(), 1);
    // Another error is another cause; retrying a job and failing it again counts.
    fail(&db, fine, "the store is gone").await;
    let (ok, _, err) = copydesk(&db, &["jobs", "retry", &fine.to_string()]);
    assert!(ok, "{err}");
    fail(&db, fine, "the store is gone").await;
    let rows = notifications(&db).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[1].2, rows[1].3), (2, Some(fine)));

    // The CLI: unread ones as JSON, one marked read, then every one.
    let (ok, out, err) = copydesk(&db, &["notifications", "list", "--unread", "--json"]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["body"], "the store is gone");
    assert_eq!(listed[0]["tenant"], "default");
    let id = listed[0]["id"].as_str().unwrap();
    let (ok, out, err) = copydesk(&db, &["notifications", "read", id, "--by", "ops"]);
    assert!(ok, "{err}");
    assert!(out.contains("marked read by ops"), "{out}");
    let (ok, _, err) = copydesk(&db, &["notifications", "read", id]);
    assert!(!ok);
    assert!(
        err.contains(&format!("no unread notification {id}")),
        "{err}"
    );
    let (ok, out, _) = copydesk(&db, &["notifications", "list", "--unread", "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 1);
    // Once read, the same cause again starts a new row.
    let again = noop(&db, r#"{"sleep_ms": "never"}"#).await;
    fail(&db, again, "the store is gone").await;
    assert_eq!(notifications(&db).await.len(), 3);
    let (ok, out, err) = copydesk(&db, &["notifications", "read", "--all", "--by", "ops"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("2 notification(s) marked read by ops"),
        "{out}"
    );
    let (ok, out, _) = copydesk(&db, &["notifications", "list", "--unread"]);
    assert!(ok);
    assert_eq!(out.trim(), "no unread notifications");
    let (ok, out, _) = copydesk(&db, &["notifications", "list"]);
    assert!(ok);
    assert!(
        out.contains("read by ops") && out.contains("job_failed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_the_pipeline_creates_raises_one_notification_of_its_tenant() {
    let db = test_db().await;
    let site = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<html><head><title>Linen</title></head><body><h1>Linen woven slowly</h1>\
             <p>Every shirt is cut to last a decade, and we repair what we sell.</p></body></html>",
            "text/html",
        ))
        .mount(&site)
        .await;
    let project: Uuid =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('Linen & Loom') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let mut settings = fast_settings();
    settings.fetch.allow_loopback = true;
    let r = runner(&db, settings, app::registry());
    let start = NewJob::new(
        "brand_voice_analysis",
        json!({"store_url": site.uri(), "pipeline": {"channels": ["x"], "topic": "Why linen lasts"}}),
    )
    .project(project);
    let mut tx = db.pool.begin().await.unwrap();
    let job = queue::enqueue(&mut tx, &catalog(), &start)
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    while run_once(&r, &["brand_voice_analysis"])
        .await
        .unwrap()
        .is_some()
    {}

    let approval: Uuid = sqlx::query_scalar("SELECT id FROM approvals WHERE status = 'pending'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    type Raised = (
        String,
        String,
        i32,
        Option<Uuid>,
        Option<Uuid>,
        String,
        Value,
    );
    let rows: Vec<Raised> = sqlx::query_as(
        "SELECT kind, severity, count, project_id, job_id, title, data FROM notifications",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (kind, severity, count, p, j, title, data) = &rows[0];
    assert_eq!(
        (kind.as_str(), severity.as_str(), *count, *p, *j),
        ("approval_waiting", "info", 1, Some(project), Some(job))
    );
    assert_eq!(title, "The brand voice of Linen & Loom waits for approval");
    assert_eq!(data["approval_id"], approval.to_string());

    // Another tenant sees none of it.
    sqlx::query("INSERT INTO tenants (slug, name) VALUES ('brief', 'Brief')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (ok, out, err) = copydesk(
        &db,
        &["notifications", "list", "--tenant", "brief", "--json"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]");
    let (ok, out, _) = copydesk(
        &db,
        &["notifications", "list", "--tenant", "default", "--json"],
    );
    assert!(ok);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 1);

    // Still waiting a day later: the cleanup pass reminds once (a dry run only counts).
    sqlx::query("UPDATE approvals SET created_at = now() - interval '25 hours'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (ok, out, err) = copydesk(&db, &["cleanup", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("would remind of 1 approval(s)"), "{out}");
    for _ in 0..2 {
        let (ok, _, err) = copydesk(&db, &["cleanup"]);
        assert!(ok, "{err}");
    }
    let reminders: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT severity, count, title FROM notifications WHERE kind = 'approval_reminder'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        reminders,
        [(
            "warning".into(),
            1,
            "The brand voice of Linen & Loom has waited 25 hours for approval".into()
        )]
    );

    // Deciding the approval reads its notifications, by whoever decided.
    let (ok, _, err) = copydesk(
        &db,
        &["approvals", "approve", &approval.to_string(), "--by", "ana"],
    );
    assert!(ok, "{err}");
    let read_by: Vec<Option<String>> = sqlx::query_scalar("SELECT read_by FROM notifications")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(read_by, [Some("ana".to_owned()), Some("ana".to_owned())]);
}

/// What the webhook receiver saw: each request's headers and body, and whether the
/// Standard Webhooks library verified it.
#[derive(Default)]
struct Received {
    requests: Vec<(axum::http::HeaderMap, Vec<u8>, bool)>,
    accepted_ids: Vec<String>,
    /// Answer this many requests (the first ones) with 500.
    fail_first: usize,
}

/// A receiver as the specification describes it: verifies the signature with the
/// secret (the official library), refuses a message id it has taken before (a
/// replay) with 409, and takes the rest.
async fn receive(
    axum::extract::State((secret, seen)): axum::extract::State<(
        String,
        std::sync::Arc<std::sync::Mutex<Received>>,
    )>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let verified = standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&body, &headers)
        .is_ok();
    let mut r = seen.lock().unwrap();
    r.requests.push((headers.clone(), body.to_vec(), verified));
    if !verified {
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    if r.accepted_ids.contains(&id) {
        return StatusCode::CONFLICT;
    }
    if r.fail_first > 0 {
        r.fail_first -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.accepted_ids.push(id);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_each_new_notification_signed_retried_and_never_for_a_rollback() {
    use std::sync::{Arc, Mutex};
    let db = test_db().await;
    let key = copydesk::keys::Keys::generate();
    let seen = Arc::new(Mutex::new(Received {
        fail_first: 2,
        ..Received::default()
    }));
    // The channel is added first (its secret is made then); the receiver reads it late.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/copydesk", listener.local_addr().unwrap());
    let env = [
        ("COPYDESK_FERNET_KEYS", key.as_str()),
        ("COPYDESK__FETCH__ALLOW_LOOPBACK", "true"),
    ];
    let (ok, out, err) = copydesk_at(
        &db.url,
        &env,
        &[
            "notifications",
            "channels",
            "add",
            "webhook",
            &url,
            "--min-severity",
            "warning",
        ],
    );
    assert!(ok, "{err}");
    let secret = out.lines().last().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{out}");
    let app = axum::Router::new()
        .route("/hooks/copydesk", axum::routing::post(receive))
        .with_state((secret.clone(), seen.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The URL is shown by its origin (a webhook URL may itself be a credential), and
    // neither its path nor the secret is in the database as text.
    let origin = url.trim_end_matches("/hooks/copydesk");
    assert!(out.starts_with("channel "), "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains(&format!("webhook {origin}/…")),
        "{out}"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notification_channels
          WHERE position($1 in target || convert_from(url, 'LATIN1') || convert_from(secret, 'LATIN1')) > 0
             OR position('/hooks/copydesk' in target || convert_from(url, 'LATIN1')) > 0",
    )
    .bind(secret.trim_start_matches("whsec_"))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);

    let mut settings = fast_settings();
    settings.fetch.allow_loopback = true;
    let services = copydesk::jobs::Services {
        keys: copydesk::keys::Keys::parse(&key).map(Arc::new),
        ..services(settings)
    };
    let r = app::runner(db.pool.clone(), app::registry(), services);

    // A rolled-back failure: no notification, no delivery, nothing sent.
    let job = noop(&db, "{}").await;
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE jobs SET status = 'failed', last_error = 'made up' WHERE id = $1")
        .bind(job)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // An info notification is below the channel's least severity: not sent either.
    copydesk::store::notifications::raise(
        &db.pool,
        &copydesk::store::notifications::New {
            tenant: copydesk::domain::DEFAULT_TENANT,
            project: None,
            job: None,
            severity: copydesk::domain::Severity::Info,
            kind: "test_info",
            cause: "x",
            title: "Just so you know",
            body: "",
            data: json!({}),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM notification_deliveries").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE kind = 'notify'").await,
        0
    );

    // A job failing for good: one delivery, refused twice with 500, taken the third time.
    fail(&db, job, "the store is gone").await;
    wait_for(
        std::time::Duration::from_secs(20),
        "the webhook to take it",
        || async {
            while run_once(&r, &["notify"]).await.unwrap().is_some() {}
            count(
                &db.pool,
                "SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'",
            )
            .await
                == 1
        },
    )
    .await;
    let (status, attempts, answer_status): (String, i32, Option<i32>) =
        sqlx::query_as("SELECT status, attempts, answer_status FROM notification_deliveries")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), attempts, answer_status),
        ("delivered", 3, Some(200))
    );
    let (requests, last_headers, last_body) = {
        let r = seen.lock().unwrap();
        let last = r.requests.last().unwrap();
        (r.requests.len(), last.0.clone(), last.1.clone())
    };
    assert_eq!(requests, 3);
    {
        let r = seen.lock().unwrap();
        assert!(
            r.requests.iter().all(|q| q.2),
            "every request verified by the library"
        );
        let ids: Vec<&str> = r
            .requests
            .iter()
            .map(|q| q.0["webhook-id"].to_str().unwrap())
            .collect();
        assert!(
            ids.iter().all(|i| *i == ids[0]),
            "one message id across retries: {ids:?}"
        );
    }
    let payload: Value = serde_json::from_slice(&last_body).unwrap();
    assert_eq!(payload["kind"], "job_failed");
    assert_eq!(payload["job_id"], job.to_string());
    assert_eq!(
        payload["text"],
        "[error] A noop job failed for good\nthe store is gone"
    );
    assert!(payload["notification_id"].is_string());

    // The same request again is a replay: refused. A changed timestamp breaks the
    // signature.
    let client = reqwest::Client::new();
    let resend = |headers: axum::http::HeaderMap| {
        let (client, url, body) = (client.clone(), url.clone(), last_body.clone());
        async move {
            let mut req = client.post(&url).body(body);
            for (k, v) in headers.iter() {
                req = req.header(k.as_str(), v.to_str().unwrap());
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(resend(last_headers.clone()).await, 409);
    let mut forged = last_headers.clone();
    let later = last_headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse::<i64>()
        .unwrap()
        + 1;
    forged.insert("webhook-timestamp", later.to_string().parse().unwrap());
    assert_eq!(resend(forged).await, 401);

    // A repeat of the cause folds into the unread row: counted, not sent again.
    let again = noop(&db, "{}").await;
    fail(&db, again, "the store is gone").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE kind = 'notify'").await,
        1
    );

    // The CLI: the channel with its last delivery; a test through it.
    let (ok, out, err) = copydesk_at(
        &db.url,
        &env,
        &["notifications", "channels", "list", "--json"],
    );
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["last_status"], "delivered");
    assert_eq!(listed[0]["last_answer_status"], 200);
    assert!(
        !out.contains("whsec_") && !out.contains("/hooks/copydesk"),
        "{out}"
    );
    // Nor is the path in what the failed attempts left behind.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs j, notification_deliveries d
              WHERE j.last_error LIKE '%/hooks/copydesk%' OR d.answer LIKE '%/hooks/copydesk%'"
        )
        .await,
        0
    );
    let channel = listed[0]["id"].as_str().unwrap().to_owned();
    let (ok, out, err) = copydesk_at(&db.url, &env, &["notifications", "test", &channel]);
    assert!(ok, "{err}");
    assert!(out.contains("answered 200"), "{out}");
    assert_eq!(seen.lock().unwrap().requests.len(), 6);
    let (ok, _, err) = copydesk_at(
        &db.url,
        &env,
        &["notifications", "channels", "remove", &channel],
    );
    assert!(ok, "{err}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM notification_deliveries").await,
        0
    );
}

/// A real SMTP server on loopback (Debian's `python3-aiosmtpd`): STARTTLS required
/// before anything else, a login required after it, the first message refused with
/// 451 (try again later); each message taken is printed as a JSON line.
const SMTP_SERVER: &str = r#"
import json, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, port, user, password, refuse = sys.argv[1:7]
refuse = int(refuse)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        global refuse
        if refuse > 0:
            refuse -= 1
            return '451 4.3.0 Try again later'
        print(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "authenticated": bool(session.authenticated),
                          "data": envelope.content.decode('utf8', 'replace')}), flush=True)
        return '250 2.0.0 Ok: queued'

def login(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
          and auth_data.password == password.encode())
    return AuthResult(success=ok, handled=False)

tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
Controller(Handler(), hostname='127.0.0.1', port=int(port), tls_context=tls,
           require_starttls=True, authenticator=login, auth_required=True,
           auth_require_tls=True).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// A certificate authority and a certificate it signed for 127.0.0.1: (CA, cert, key).
fn smtp_certificates(dir: &std::path::Path) -> (String, String, String) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for args in [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=copydesk test CA",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &p("smtp.key"),
                "-out",
                &p("smtp.csr"),
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &p("smtp.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("smtp.pem"),
            "-days",
            "2",
            "-extfile",
            &p("ext"),
        ],
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (p("ca.pem"), p("smtp.pem"), p("smtp.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_channel_sends_through_a_real_smtp_server_with_starttls_and_a_login() {
    use std::io::BufRead;
    let db = test_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = smtp_certificates(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("smtp.py"), SMTP_SERVER).unwrap();
    // Debian's Python (where the package installs aiosmtpd), not one on PATH.
    let mut server = Proc(
        std::process::Command::new("/usr/bin/python3")
            .arg(dir.path().join("smtp.py"))
            .args([
                &cert,
                &key,
                &port.to_string(),
                "copydesk",
                "s3cret-smtp",
                "1",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 runs (apt-get install python3-aiosmtpd)"),
    );
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = server.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the SMTP server did not report {what}"))
    };
    assert_eq!(next("ready (is python3-aiosmtpd installed?)"), "ready");

    // Without a server configured, an email channel is refused before anything is kept.
    let (ok, _, err) = copydesk(
        &db,
        &[
            "notifications",
            "channels",
            "add",
            "email",
            "ana@example.com",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("no SMTP server is configured: set [notifications.email] smtp_host"),
        "{err}"
    );
    let port = port.to_string();
    let mut env = vec![
        ("COPYDESK__NOTIFICATIONS__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("COPYDESK__NOTIFICATIONS__EMAIL__SMTP_PORT", port.as_str()),
        (
            "COPYDESK__NOTIFICATIONS__EMAIL__FROM",
            "copydesk <copydesk@example.net>",
        ),
        ("COPYDESK_SMTP_USERNAME", "copydesk"),
        ("COPYDESK_SMTP_PASSWORD", "s3cret-smtp"),
    ];
    let (ok, _, err) = copydesk_at(
        &db.url,
        &env,
        &[
            "notifications",
            "channels",
            "add",
            "email",
            "ana at example",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("\"ana at example\" is not an email address"),
        "{err}"
    );
    let (ok, out, err) = copydesk_at(
        &db.url,
        &env,
        &[
            "notifications",
            "channels",
            "add",
            "email",
            "Ana <ana@example.com>",
            "--min-severity",
            "warning",
        ],
    );
    assert!(ok, "{err}");
    let channel = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    assert!(
        out.contains("email to Ana <ana@example.com>, warning and above"),
        "{out}"
    );

    // The server's certificate is signed by a CA the system does not trust: refused,
    // nothing sent, until ca_file names it.
    let (ok, _, err) = copydesk_at(&db.url, &env, &["notifications", "test", &channel]);
    assert!(!ok);
    assert!(err.contains("the SMTP server 127.0.0.1:"), "{err}");
    assert!(err.contains("could not be reached"), "{err}");
    assert!(!err.contains("s3cret-smtp"), "{err}");
    env.push(("COPYDESK__NOTIFICATIONS__EMAIL__CA_FILE", ca.as_str()));
    // A wrong password: the server's 535, and the password nowhere in what is said.
    let mut wrong = env.clone();
    wrong.push(("COPYDESK_SMTP_PASSWORD", "not-it"));
    let (ok, _, err) = copydesk_at(&db.url, &wrong, &["notifications", "test", &channel]);
    assert!(!ok);
    assert!(err.contains("refused the email: 535"), "{err}");
    assert!(!err.contains("not-it"), "{err}");

    // A job failing for good, delivered by the real worker: the server refuses the
    // first message with 451, the delivery is retried and taken.
    let job = noop(&db, "{}").await;
    fail(&db, job, "the store is gone").await;
    let mut worker = spawn_worker(&db, &[], &env);
    let mail: Value = serde_json::from_str(&next("the notification's email")).unwrap();
    assert_eq!(mail["from"], "copydesk@example.net");
    assert_eq!(mail["to"], json!(["ana@example.com"]));
    assert_eq!(mail["authenticated"], true);
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [copydesk error] A noop job failed for good"),
        "{data}"
    );
    assert!(data.contains("the store is gone"), "{data}");
    assert!(data.contains(&format!("Job: {job}")), "{data}");
    wait_for(
        std::time::Duration::from_secs(20),
        "the delivery to be recorded",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'",
            )
            .await
                == 1
        },
    )
    .await;
    let (attempts, answer_status, answer): (i32, Option<i32>, String) =
        sqlx::query_as("SELECT attempts, answer_status, answer FROM notification_deliveries")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempts, answer_status), (2, Some(250)), "{answer}");
    assert!(answer.contains("Ok: queued"), "{answer}");
    let message_id = data.lines().find(|l| l.starts_with("Message-ID:")).unwrap();
    assert!(message_id.contains("@copydesk>"), "{message_id}");
    signal(&worker, nix::sys::signal::Signal::SIGTERM);
    wait_exit(&mut worker, std::time::Duration::from_secs(20));
    // Nothing else was sent.
    assert!(lines.try_recv().is_err());

    // `notifications test` sends one now.
    let (ok, out, err) = copydesk_at(&db.url, &env, &["notifications", "test", &channel]);
    assert!(ok, "{err}");
    assert!(
        out.contains("the SMTP server took the email for Ana <ana@example.com>: 250"),
        "{out}"
    );
    let test_mail: Value = serde_json::from_str(&next("the test email")).unwrap();
    assert_eq!(test_mail["authenticated"], true);
    assert!(
        test_mail["data"]
            .as_str()
            .unwrap()
            .contains("A test of copydesk's notifications")
    );
}

/// Runs the day from `start` of every worker's scheduled ticks (cleanup, token
/// refresh, cache refresh, as `app::worker::periodic` makes them from `settings`) on
/// `db`, the jobs run by a worker with `keys`: the number of jobs the day made.
async fn a_day_of_ticks(
    db: &TestDb,
    settings: &copydesk::config::Settings,
    keys: &str,
    start: chrono::DateTime<chrono::Utc>,
) -> usize {
    use std::{str::FromStr, sync::Arc};
    let services = copydesk::jobs::Services {
        keys: copydesk::keys::Keys::parse(keys).map(Arc::new),
        ..services(settings.clone())
    };
    let r = app::runner(db.pool.clone(), app::registry(), services);
    let end = start + chrono::Duration::days(1);
    let mut made = 0;
    let mut conn = db.pool.acquire().await.unwrap();
    for p in app::worker::periodic(settings) {
        let schedule = cron::Schedule::from_str(&p.schedule).unwrap();
        for at in schedule.after(&start).take_while(|t| *t <= end) {
            for job in (p.jobs)(at) {
                queue::enqueue(&mut conn, &catalog(), &job).await.unwrap();
                made += 1;
            }
        }
    }
    drop(conn);
    let kinds = ["cleanup", "token_refresh", "cache_refresh", "notify"];
    while run_once(&r, &kinds).await.unwrap().is_some() {}
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_scheduled_ticks_on_an_empty_installation_fails_nothing_and_tells_no_one() {
    let db = test_db().await;
    // As a new user starts: the defaults (the daily cache refresh on, no catalogue
    // URL), no model key, and no COPYDESK_FERNET_KEYS: nobody publishes yet.
    let mut settings = copydesk::config::Settings::defaults();
    settings.llm.provider = "offline".into();
    let today = chrono::Utc::now();
    let made = a_day_of_ticks(&db, &settings, "", today).await;
    // 96 cleanups (every 15 minutes), 144 token refreshes (every 10), 1 cache refresh.
    assert_eq!(made, 96 + 144 + 1);
    let left: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT kind, status, last_error FROM jobs WHERE status <> 'done' ORDER BY kind",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        left.is_empty(),
        "jobs not done after a day of ticks: {left:?}"
    );
    let told: Vec<(String, String)> = sqlx::query_as("SELECT kind, title FROM notifications")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(told.is_empty(), "a day of ticks told someone: {told:?}");

    // A problem that matters (an X integration whose credentials no key here can read)
    // is one warning counted at each tick, not a failed job and an alert per tick.
    let fake = copydesk::demo::platforms::FakePlatforms::start()
        .await
        .unwrap();
    let (creds, meta) = fake.integration(copydesk::domain::Platform::X);
    let project: Uuid = sqlx::query_scalar("INSERT INTO projects (name) VALUES ('x') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let keys = copydesk::keys::Keys::parse(&copydesk::keys::Keys::generate()).unwrap();
    copydesk::publish::integrations::connect(
        &db.pool,
        &keys,
        project,
        copydesk::domain::Platform::X,
        &creds,
        &meta,
        "test",
    )
    .await
    .unwrap();
    a_day_of_ticks(&db, &settings, "", today + chrono::Duration::days(1)).await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status <> 'done'").await,
        0
    );
    let told: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT kind, severity, count FROM notifications")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        told,
        [("credentials_unreadable".into(), "warning".into(), 144)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_queue_is_told_once_per_episode_with_its_workers_and_resolved_when_it_moves() {
    use copydesk::app::stalls;
    let db = test_db().await;
    let five_minutes = std::time::Duration::from_secs(300);
    // A noop ready for ten minutes, and an evaluation ready for one: only noop stalls.
    let old: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, created_at, run_at)
         VALUES ('noop', '{}', now() - interval '10 minutes', now() - interval '10 minutes')
         RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (kind, input, created_at, run_at)
         VALUES ('cleanup', '{}', now() - interval '1 minute', now() - interval '1 minute')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let found = stalls::check(&db.pool, five_minutes).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].kind.as_str(), found[0].workers), ("noop", 0));
    assert!(found[0].waited_secs >= 600.0, "{found:?}");
    let told = || async {
        sqlx::query_as::<_, (String, String, String, i32, Option<String>)>(
            "SELECT severity, title, body, count, read_by FROM notifications
              WHERE kind = 'queue_stalled'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let first = told().await;
    assert_eq!(first.len(), 1);
    let (severity, title, body, n, read_by) = &first[0];
    assert_eq!(
        (severity.as_str(), *n, read_by.as_deref()),
        ("warning", 1, None)
    );
    assert!(
        title.starts_with("The noop queue has not moved for 10m"),
        "{title}"
    );
    assert!(body.contains("no live worker serves noop"), "{body}");
    // A live worker that serves noop and does not claim it: the same episode, counted,
    // now naming the worker and where to look.
    sqlx::query(
        "INSERT INTO copydesk_workers (name, kinds, version, alive_until)
         VALUES ('w1', ARRAY['noop'], '0.1.0', now() + interval '1 minute')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    stalls::check(&db.pool, five_minutes).await.unwrap();
    let second = told().await;
    assert_eq!(second.len(), 1, "one row per episode: {second:?}");
    assert_eq!(second[0].3, 2);
    assert!(
        second[0].2.contains("1 live worker process(es)"),
        "{}",
        second[0].2
    );
    assert!(second[0].2.contains("pg_stat_activity"), "{}", second[0].2);
    // The kind moves: resolved at the next look.
    sqlx::query("UPDATE jobs SET status = 'done', finished_at = now() WHERE id = $1")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        stalls::check(&db.pool, five_minutes)
            .await
            .unwrap()
            .is_empty()
    );
    let resolved = told().await;
    assert_eq!(
        resolved[0].4.as_deref(),
        Some("copydesk (the queue moved again)")
    );
    // A new stall later is a new episode: a new row.
    sqlx::query(
        "INSERT INTO jobs (kind, input, created_at, run_at)
         VALUES ('noop', '{}', now() - interval '6 minutes', now() - interval '6 minutes')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    stalls::check(&db.pool, five_minutes).await.unwrap();
    assert_eq!(told().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holding_the_horizon_is_told_by_name_and_resolved_when_it_ends() {
    use copydesk::app::horizon;
    use sqlx::Connection;
    let db = test_db().await;
    let after = std::time::Duration::from_secs(1);
    // A report left open in REPEATABLE READ, as an analyst's tool would.
    let mut report = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET application_name = 'weekly-report'")
        .execute(&mut report)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut report)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs;")
        .execute(&mut report)
        .await
        .unwrap();
    // Not yet past the threshold: nothing.
    assert!(
        horizon::check(&db.pool, std::time::Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let found = horizon::check(&db.pool, after).await.unwrap();
    let ours: Vec<_> = found.iter().filter(|h| h.pid == Some(pid)).collect();
    assert_eq!(ours.len(), 1, "{found:?}");
    assert_eq!(ours[0].application_name.as_deref(), Some("weekly-report"));
    assert_eq!(ours[0].state.as_deref(), Some("idle in transaction"));
    let told = || async {
        sqlx::query_as::<_, (String, String, String, i32, Option<String>)>(
            "SELECT severity, title, body, count, read_by FROM notifications
              WHERE kind = 'horizon_held' AND cause = $1",
        )
        .bind(format!("pid:{pid}"))
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let row = told().await;
    assert_eq!(row.len(), 1);
    let (severity, title, body, n, read_by) = &row[0];
    assert_eq!(
        (severity.as_str(), *n, read_by.as_deref()),
        ("warning", 1, None)
    );
    assert!(
        title.contains(&format!("pid {pid}")) && title.contains("weekly-report"),
        "{title}"
    );
    assert!(title.contains("idle in transaction"), "{title}");
    assert!(
        body.contains("dead row versions") && body.contains("pg_terminate_backend"),
        "{body}"
    );
    // Still held: the same row, counted.
    horizon::check(&db.pool, after).await.unwrap();
    assert_eq!(told().await[0].3, 2);
    // It ends: resolved at the next look.
    sqlx::query("COMMIT").execute(&mut report).await.unwrap();
    let found = horizon::check(&db.pool, after).await.unwrap();
    assert!(found.iter().all(|h| h.pid != Some(pid)), "{found:?}");
    assert_eq!(
        told().await[0].4.as_deref(),
        Some("copydesk (the horizon moved again)")
    );
}
