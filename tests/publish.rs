//! Publishing against local platforms that speak the real protocols (copydesk's
//! `demo::platforms`): approve to publication on each destination, throttling, revoked
//! credentials, a worker killed after the platform accepted the post, duplicate
//! refusals, key rotation, and secrets kept out of logs and rows.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use common::*;
use copydesk::{
    app,
    config::Settings,
    demo::platforms::FakePlatforms,
    domain::Platform,
    jobs::{App, Services},
    keys::Keys,
    pipeline::decisions,
    publish::integrations,
    queue::{Runner, runner::run_once},
    store,
};
use serde_json::{Value, json};
use uuid::Uuid;

fn publish_runner(db: &TestDb, settings: Settings, keys: &str) -> Runner<App> {
    let services = Services {
        keys: Keys::parse(keys).map(Arc::new),
        ..services(settings)
    };
    app::runner(db.pool.clone(), app::registry(), services)
}

async fn project(db: &TestDb) -> Uuid {
    sqlx::query_scalar("INSERT INTO projects (name) VALUES ('Linen & Loom') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn connect(
    db: &TestDb,
    fake: &FakePlatforms,
    keys: &str,
    project: Uuid,
    platform: Platform,
) -> Uuid {
    let (creds, meta) = fake.integration(platform);
    integrations::connect(
        &db.pool,
        &Keys::parse(keys).unwrap(),
        project,
        platform,
        &creds,
        &meta,
        "test",
    )
    .await
    .unwrap()
}

/// A draft waiting for a person after its evaluation, as the pipeline leaves it;
/// returns the pending approval's id.
async fn draft_awaiting_approval(
    db: &TestDb,
    project: Uuid,
    channel: &str,
    title: &str,
    content: &str,
    schedule: Option<DateTime<Utc>>,
) -> (Uuid, Uuid) {
    let draft: Uuid = sqlx::query_scalar(
        "INSERT INTO artifacts (project_id, kind, channel, source, title, content)
         VALUES ($1, 'draft', $2, 'ai', $3, $4) RETURNING id",
    )
    .bind(project)
    .bind(channel)
    .bind(title)
    .bind(content)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut input = json!({"draft_artifact_id": draft, "channel": channel,
                           "brand_voice_artifact_id": draft, "iteration": 1});
    if let Some(s) = schedule {
        input["schedule"] = json!(s.to_rfc3339());
    }
    let job: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, status, project_id, input, attempts) VALUES ('evaluation', 'needs_approval', $1, $2, 1)
         RETURNING id",
    )
    .bind(project)
    .bind(input)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let approval: Uuid = sqlx::query_scalar(
        "INSERT INTO approvals (job_id, artifact_id) VALUES ($1, $2) RETURNING id",
    )
    .bind(job)
    .bind(draft)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (draft, approval)
}

/// Approves and applies: returns the publishing job the decision enqueued.
async fn approve(db: &TestDb, settings: &Settings, approval: Uuid) -> Uuid {
    decisions::decide(&db.pool, approval, true, "ana", None)
        .await
        .unwrap();
    let applied = decisions::apply_decided(&db.pool, &catalog(), settings, 10)
        .await
        .unwrap();
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(applied[0].enqueued.len(), 1, "{applied:?}");
    applied[0].enqueued[0]
}

async fn job_input(db: &TestDb, job: Uuid) -> Value {
    sqlx::query_scalar("SELECT input FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn publication(db: &TestDb, draft: Uuid) -> Value {
    sqlx::query_scalar("SELECT data FROM artifacts WHERE kind = 'publication' AND based_on_id = $1")
        .bind(draft)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn publications(db: &TestDb) -> i64 {
    count(
        &db.pool,
        "SELECT count(*) FROM artifacts WHERE kind = 'publication'",
    )
    .await
}

/// Runs publishing jobs in this process until none is ready.
async fn drain(r: &Runner<App>) {
    while run_once(r, &["publishing"]).await.unwrap().is_some() {}
}

const BLOG: &str = "## Why linen lasts\n\nOur linen is woven **slowly** in small mills.\n\n- Natural dyes\n- Free repairs\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_destination_publishes_an_approved_draft_once() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    let p2 = project(&db).await;
    for platform in [
        Platform::Wordpress,
        Platform::Linkedin,
        Platform::X,
        Platform::Facebook,
    ] {
        connect(&db, &fake, &k, p, platform).await;
    }
    let shopify = connect(&db, &fake, &k, p2, Platform::Shopify).await;
    let cases = [
        (
            p,
            "blog",
            Platform::Wordpress,
            "Why linen lasts",
            BLOG.to_owned(),
        ),
        (
            p2,
            "blog",
            Platform::Shopify,
            "Why linen lasts",
            BLOG.to_owned(),
        ),
        (
            p,
            "linkedin",
            Platform::Linkedin,
            "",
            "Linen (50% off this week) for *makers* #linen @ Loom".to_owned(),
        ),
        (
            p,
            "x",
            Platform::X,
            "",
            "Linen that lasts a decade 🧵 https://linenandloom.example/journal".to_owned(),
        ),
        (
            p,
            "facebook",
            Platform::Facebook,
            "",
            "New in the journal: why our linen lasts.".to_owned(),
        ),
    ];
    for (project, channel, platform, title, content) in cases {
        let (draft, approval) =
            draft_awaiting_approval(&db, project, channel, title, &content, None).await;
        let job = approve(&db, &settings, approval).await;
        let input = job_input(&db, job).await;
        assert!(
            input["integration_id"].is_string(),
            "{platform}: the pipeline fills integration_id: {input}"
        );
        drain(&r).await;
        let (attempts, error) = attempts_and_error(&db.pool, job).await;
        assert_eq!(
            status_of(&db.pool, job).await,
            "done",
            "{platform}: {error:?}"
        );
        assert_eq!(attempts, 1);
        let posts = fake.posts_on(platform);
        assert_eq!(posts.len(), 1, "{platform}: {posts:?}");
        let data = publication(&db, draft).await;
        assert_eq!(data["platform"], platform.as_str());
        assert_eq!(data["external_id"], posts[0].id.as_str(), "{platform}");
        assert_eq!(data["how"], "posted");
        assert!(data["url"].as_str().unwrap().starts_with("http"), "{data}");
        let calls = count(&db.pool, &format!(
            "SELECT count(*) FROM runs WHERE job_id = '{job}' AND provider = '{platform}' AND status = 'ok'"
        )).await;
        assert!(calls >= 1, "{platform}: a runs row per call");
        match platform {
            Platform::Wordpress => {
                assert!(
                    posts[0].body.contains("<h2>Why linen lasts</h2>"),
                    "{}",
                    posts[0].body
                );
                assert!(posts[0].body.contains("<strong>slowly</strong>"));
                assert_eq!(posts[0].status, "publish");
                assert!(
                    posts[0]
                        .slug
                        .as_deref()
                        .unwrap()
                        .starts_with("why-linen-lasts-")
                );
            }
            Platform::Shopify => {
                assert!(posts[0].body.contains("<li>Natural dyes</li>"));
                let slug = posts[0].slug.clone().unwrap();
                assert_eq!(
                    data["url"],
                    format!("https://linen-and-loom.myshopify.com/blogs/journal/{slug}")
                );
            }
            // LinkedIn keeps the text up to the first unescaped reserved character:
            // the whole text arriving means the escaping was right.
            Platform::Linkedin => {
                assert_eq!(posts[0].text, content);
                assert!(
                    data["external_id"]
                        .as_str()
                        .unwrap()
                        .starts_with("urn:li:share:")
                );
            }
            Platform::X => assert_eq!(
                data["url"],
                format!("https://x.com/linenandloom/status/{}", posts[0].id)
            ),
            Platform::Facebook => assert_eq!(posts[0].status, "published"),
        }
    }
    let synced = count(
        &db.pool,
        "SELECT count(*) FROM integrations WHERE last_sync_at IS NOT NULL",
    )
    .await;
    assert_eq!(synced, 5);
    assert!(shopify != Uuid::nil());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_posts_go_to_native_schedulers_or_wait_for_their_time() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    for platform in [Platform::Wordpress, Platform::X, Platform::Facebook] {
        connect(&db, &fake, &k, p, platform).await;
    }
    let at = Utc::now() + chrono::Duration::hours(3);
    let (wp_draft, a) =
        draft_awaiting_approval(&db, p, "blog", "Linen later", BLOG, Some(at)).await;
    let wp_job = approve(&db, &settings, a).await;
    let (_, a) =
        draft_awaiting_approval(&db, p, "facebook", "", "Scheduled linen news.", Some(at)).await;
    let fb_job = approve(&db, &settings, a).await;
    let (_, a) = draft_awaiting_approval(&db, p, "x", "", "Linen at three.", Some(at)).await;
    let x_job = approve(&db, &settings, a).await;
    drain(&r).await;
    // WordPress and Facebook take the time themselves; X has no scheduler: the job waits.
    assert_eq!(status_of(&db.pool, wp_job).await, "done");
    assert_eq!(status_of(&db.pool, fb_job).await, "done");
    assert_eq!(status_of(&db.pool, x_job).await, "queued");
    let run_at: DateTime<Utc> = sqlx::query_scalar("SELECT run_at FROM jobs WHERE id = $1")
        .bind(x_job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!((run_at - at).num_seconds().abs() < 2, "{run_at} vs {at}");
    let wp = &fake.posts_on(Platform::Wordpress)[0];
    assert_eq!(wp.status, "future");
    assert_eq!(wp.scheduled_for, Some(at.timestamp()));
    let fb = &fake.posts_on(Platform::Facebook)[0];
    assert_eq!(fb.status, "scheduled");
    assert_eq!(fb.scheduled_for, Some(at.timestamp()));
    assert!(fake.posts_on(Platform::X).is_empty());
    let data = publication(&db, wp_draft).await;
    assert_eq!(
        data["scheduled_for"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap().timestamp()),
        Some(at.timestamp())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_pauses_the_integrations_key_spends_no_attempt_and_posts_once() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::X).await;
    connect(&db, &fake, &k, p, Platform::Facebook).await;
    fake.throttle(Platform::X, 1); // 429 + Retry-After: 1
    fake.throttle(Platform::Facebook, 1); // HTTP 400 with error code 32 in the body
    let (_, a) = draft_awaiting_approval(&db, p, "x", "", "Slow linen.", None).await;
    let x_job = approve(&db, &settings, a).await;
    let (_, a) =
        draft_awaiting_approval(&db, p, "facebook", "", "Slow linen, on Facebook.", None).await;
    let fb_job = approve(&db, &settings, a).await;
    drain(&r).await;
    for (job, platform) in [(x_job, "x"), (fb_job, "facebook")] {
        assert_eq!(status_of(&db.pool, job).await, "queued");
        let (attempts, error) = attempts_and_error(&db.pool, job).await;
        assert_eq!(
            (attempts, error),
            (0, None),
            "a throttle is not a failed attempt"
        );
        let note: String = sqlx::query_scalar("SELECT waiting_for FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(
            note.starts_with(&format!("waiting for limit platform:{platform}:"))
                && note.contains("rate limited"),
            "{note}"
        );
    }
    // Each integration's key is paused for every process.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM limits WHERE throttled = 1 AND paused_until > now()
               AND key ~ '^platform:(x|facebook):'"
        )
        .await,
        2
    );
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - updated_at)::float8 FROM jobs WHERE id = $1",
    )
    .bind(x_job)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(wait >= 0.9, "Retry-After: 1 honoured, waited {wait}s");
    wait_for(Duration::from_secs(10), "the retries", || async {
        drain(&r).await;
        status_of(&db.pool, x_job).await == "done" && status_of(&db.pool, fb_job).await == "done"
    })
    .await;
    assert_eq!(fake.posts_on(Platform::X).len(), 1);
    assert_eq!(fake.posts_on(Platform::Facebook).len(), 1);
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM publish_attempts WHERE job_id = $1 ORDER BY created_at",
    )
    .bind(x_job)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(states, ["not_sent", "sent"]);
    for job in [x_job, fb_job] {
        let (attempts, _) = attempts_and_error(&db.pool, job).await;
        assert_eq!(attempts, 1, "posted in the one attempt that counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_mark_the_integration_error_and_fail_with_the_platforms_words() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    let li = connect(&db, &fake, &k, p, Platform::Linkedin).await;
    fake.revoke(Platform::Linkedin);
    let (_, a) = draft_awaiting_approval(&db, p, "linkedin", "", "Linen news.", None).await;
    let job = approve(&db, &settings, a).await;
    drain(&r).await;
    assert_eq!(status_of(&db.pool, job).await, "failed");
    let (attempts, error) = attempts_and_error(&db.pool, job).await;
    assert_eq!(attempts, 1, "a 401 is not retried");
    let error = error.unwrap();
    assert!(
        error.contains("The token used in the request has been revoked by the user"),
        "{error}"
    );
    let i = store::integrations::get(&db.pool, li).await.unwrap();
    assert_eq!(i.status, copydesk::domain::IntegrationStatus::Error);
    assert!(i.last_error.unwrap().contains("revoked"));
    assert!(fake.posts_on(Platform::Linkedin).is_empty());
    // A person is told once, by the refusal: the job's failure is not told again.
    assert_eq!(
        raised(&db).await,
        [("credentials_refused".into(), 1, Some(job))],
    );
    let title: String =
        sqlx::query_scalar("SELECT title FROM notifications WHERE kind = 'credentials_refused'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        title,
        "linkedin refused the credentials of the integration of Linen & Loom"
    );
    // Refused again (an integration test now): the same row counts it.
    store::integrations::mark_error(&db.pool, li, "revoked", None)
        .await
        .unwrap();
    assert_eq!(
        raised(&db).await,
        [("credentials_refused".into(), 2, Some(job))],
    );
}

/// The notifications raised besides approvals waiting: (kind, count, job), oldest
/// first.
async fn raised(db: &TestDb) -> Vec<(String, i32, Option<Uuid>)> {
    sqlx::query_as(
        "SELECT kind, count, job_id FROM notifications WHERE kind <> 'approval_waiting'
          ORDER BY created_at, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_over_the_limit_fails_before_any_call() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::X).await;
    // 150 CJK characters weigh 300 as X counts them.
    let (_, a) = draft_awaiting_approval(&db, p, "x", "", &"麻".repeat(150), None).await;
    let job = approve(&db, &settings, a).await;
    drain(&r).await;
    assert_eq!(status_of(&db.pool, job).await, "failed");
    let error = attempts_and_error(&db.pool, job).await.1.unwrap();
    assert!(
        error.contains("weighs 300") && error.contains("280"),
        "{error}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_refusal_is_reconciled_into_a_publication() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::X).await;
    connect(&db, &fake, &k, p, Platform::Facebook).await;
    // The same texts are already up (an earlier attempt whose record was lost).
    let http = reqwest::Client::new();
    let (x_creds, _) = fake.integration(Platform::X);
    let res = http
        .post(format!("{}/2/tweets", fake.url(Platform::X)))
        .bearer_auth(x_creds["access_token"].as_str().unwrap())
        .json(&json!({"text": "Linen, again."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (fb_creds, fb_meta) = fake.integration(Platform::Facebook);
    let res = http
        .post(format!(
            "{}/v25.0/{}/feed",
            fake.url(Platform::Facebook),
            fb_meta["page_id"].as_str().unwrap()
        ))
        .form(&[
            ("message", "Linen, again, on Facebook."),
            (
                "access_token",
                fb_creds["page_access_token"].as_str().unwrap(),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (x_draft, a) = draft_awaiting_approval(&db, p, "x", "", "Linen, again.", None).await;
    let x_job = approve(&db, &settings, a).await;
    let (fb_draft, a) =
        draft_awaiting_approval(&db, p, "facebook", "", "Linen, again, on Facebook.", None).await;
    let fb_job = approve(&db, &settings, a).await;
    drain(&r).await;
    for (job, draft, platform) in [
        (x_job, x_draft, Platform::X),
        (fb_job, fb_draft, Platform::Facebook),
    ] {
        let (_, error) = attempts_and_error(&db.pool, job).await;
        assert_eq!(
            status_of(&db.pool, job).await,
            "done",
            "{platform}: {error:?}"
        );
        let data = publication(&db, draft).await;
        assert_eq!(data["how"], "reconciled after a duplicate refusal");
        assert_eq!(data["external_id"], fake.posts_on(platform)[0].id.as_str());
        assert_eq!(fake.posts_on(platform).len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_platform_accepted_does_not_post_twice() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::Wordpress).await;
    connect(&db, &fake, &k, p, Platform::X).await;
    let (wp_draft, a) =
        draft_awaiting_approval(&db, p, "blog", "Linen that lasts", BLOG, None).await;
    let (x_draft, b) =
        draft_awaiting_approval(&db, p, "x", "", "Linen that lasts, on X.", None).await;
    // The platforms keep each post, then hold the answer back: the worker dies waiting.
    fake.hold_answers(Some(Duration::from_secs(60)));
    let env = [
        ("COPYDESK_FERNET_KEYS", k.as_str()),
        ("COPYDESK__WORKER__LEASE_SECS", "2"),
        ("COPYDESK__LLM__PROVIDER", "offline"),
    ];
    let mut first = spawn_worker(&db, &["--kinds", "publishing", "--concurrency", "2"], &env);
    let wp_job = approve(&db, &settings, a).await;
    let x_job = approve(&db, &settings, b).await;
    wait_for(
        Duration::from_secs(20),
        "both posts to reach the platforms",
        || async { fake.posts().len() == 2 },
    )
    .await;
    signal(&first, nix::sys::signal::Signal::SIGKILL);
    first.wait().unwrap();
    fake.hold_answers(None);
    let sending = count(
        &db.pool,
        "SELECT count(*) FROM publish_attempts WHERE state = 'sending'",
    )
    .await;
    assert_eq!(
        sending, 2,
        "the attempts were recorded before the requests left"
    );
    let _second = spawn_worker(&db, &["--kinds", "publishing"], &env);
    wait_for(
        Duration::from_secs(30),
        "rescue and reconciliation",
        || async {
            status_of(&db.pool, wp_job).await == "done"
                && status_of(&db.pool, x_job).await == "done"
        },
    )
    .await;
    assert_eq!(fake.posts_on(Platform::Wordpress).len(), 1);
    assert_eq!(fake.posts_on(Platform::X).len(), 1);
    assert_eq!(publications(&db).await, 2);
    for (job, draft, platform) in [
        (wp_job, wp_draft, Platform::Wordpress),
        (x_job, x_draft, Platform::X),
    ] {
        assert_eq!(attempts_and_error(&db.pool, job).await.0, 2);
        let data = publication(&db, draft).await;
        assert_eq!(data["how"], "reconciled", "{platform}");
        assert_eq!(data["external_id"], fake.posts_on(platform)[0].id.as_str());
    }
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && !r.ends_with("oauth2/token"))
        .count();
    assert_eq!(creates, 2, "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_a_wrong_or_missing_key_fails_clearly() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let (old, new) = (Keys::generate(), Keys::generate());
    let settings = fast_settings();
    let p = project(&db).await;
    let id = connect(&db, &fake, &old, p, Platform::Facebook).await;
    store::settings::put(
        &db.pool,
        Some(&Keys::parse(&old).unwrap()),
        None,
        "catalog_token",
        "cat-secret-123",
    )
    .await
    .unwrap();
    store::settings::put(&db.pool, None, None, "note", "plain")
        .await
        .unwrap();
    // Rotation needs the old key to read and the new one first to write.
    let both = Keys::parse(&format!("{new},{old}")).unwrap();
    let done = store::settings::rotate(&db.pool, &both, "test")
        .await
        .unwrap();
    assert_eq!(
        done,
        store::settings::Rotated {
            integrations: 1,
            app_settings: 1
        }
    );
    let only_new = Keys::parse(&new).unwrap();
    let (_, creds) = integrations::load(&db.pool, &only_new, id).await.unwrap();
    assert!(creds.get("page_access_token").is_some());
    assert_eq!(
        store::settings::secret(&db.pool, &only_new, "catalog_token", None)
            .await
            .unwrap()
            .as_deref(),
        Some("cat-secret-123")
    );
    let err = integrations::load(&db.pool, &Keys::parse(&old).unwrap(), id)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot be decrypted with any key in COPYDESK_FERNET_KEYS"),
        "{err}"
    );
    // Rotating with a list that cannot read everything changes nothing.
    let stranger = Keys::parse(&Keys::generate()).unwrap();
    assert!(
        store::settings::rotate(&db.pool, &stranger, "test")
            .await
            .is_err()
    );
    assert!(integrations::load(&db.pool, &only_new, id).await.is_ok());

    // A worker with the old key alone, and one with none: the job fails and says why.
    for (keys, expect) in [
        (old.as_str(), "cannot be decrypted"),
        ("", "COPYDESK_FERNET_KEYS is not set"),
    ] {
        let r = publish_runner(&db, settings.clone(), keys);
        let (_, a) =
            draft_awaiting_approval(&db, p, "facebook", "", &format!("Key test {expect}"), None)
                .await;
        let job = approve(&db, &settings, a).await;
        drain(&r).await;
        assert_eq!(status_of(&db.pool, job).await, "failed");
        let error = attempts_and_error(&db.pool, job).await.1.unwrap();
        assert!(error.contains(expect), "{error}");
    }
    assert!(fake.requests().is_empty());
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_rows_errors_or_json() {
    // The database first: the test binary's first one migrates the template, whose SQL
    // names agents such as `blog-editor`, and `editor` is the stand-in WordPress's user.
    let db = test_db().await;
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The process-wide subscriber, not a thread's own: with a thread's own, a callsite
    // first reached by another test's thread could cache "no interest" and the capture
    // missed this test's lines about one run in four. Other tests' lines are captured
    // too, which only widens what is searched for secrets. (Only this test sets one.)
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other test in this binary sets the global subscriber");

    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    let mut secrets: Vec<String> = Vec::new();
    for platform in Platform::ALL {
        connect(&db, &fake, &k, p, platform).await;
        let (creds, _) = fake.integration(platform);
        secrets.extend(
            creds
                .as_object()
                .unwrap()
                .values()
                .filter_map(|v| v.as_str())
                .map(str::to_owned),
        );
    }
    // X's token has expired: the run refreshes it and stores the new pair.
    fake.expire_x_token();
    for (channel, text) in [
        ("blog", BLOG),
        ("linkedin", "Linen news."),
        ("x", "Linen on X."),
        ("facebook", "Linen on FB."),
    ] {
        let (_, a) = draft_awaiting_approval(&db, p, channel, "Linen", text, None).await;
        approve(&db, &settings, a).await;
    }
    // And one that fails on a revoked token, so error paths are captured too.
    drain(&r).await;
    fake.revoke(Platform::Facebook);
    let (_, a) = draft_awaiting_approval(&db, p, "facebook", "", "Linen again on FB.", None).await;
    approve(&db, &settings, a).await;
    drain(&r).await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE kind = 'publishing' AND status = 'done'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE kind = 'publishing' AND status = 'failed'"
        )
        .await,
        1
    );
    let (x_creds, _) = fake.integration(Platform::X);
    let fresh = x_creds["access_token"].as_str().unwrap().to_owned();
    assert!(!secrets.contains(&fresh), "the token was refreshed");
    secrets.push(fresh.clone());
    secrets.push(x_creds["refresh_token"].as_str().unwrap().to_owned());
    secrets.push(k.clone());
    // The refreshed pair is stored encrypted and is what the next call uses.
    let x_id: Uuid = sqlx::query_scalar("SELECT id FROM integrations WHERE platform = 'x'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let (_, stored) = integrations::load(&db.pool, &Keys::parse(&k).unwrap(), x_id)
        .await
        .unwrap();
    assert_eq!(stored.get("access_token"), Some(fresh.as_str()));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("platform call"), "the capture saw the run");
    let rows: String = sqlx::query_scalar(
        "SELECT concat_ws(' ',
            (SELECT string_agg(row_to_json(r)::text, ' ') FROM runs r),
            (SELECT string_agg(row_to_json(j)::text, ' ') FROM jobs j),
            (SELECT string_agg(row_to_json(a)::text, ' ') FROM artifacts a),
            (SELECT string_agg(row_to_json(p)::text, ' ') FROM publish_attempts p),
            (SELECT string_agg(row_to_json(n)::text, ' ') FROM notifications n),
            (SELECT string_agg(row_to_json(i)::text, ' ') FROM (SELECT id, metadata, status, last_error FROM integrations) i),
            (SELECT string_agg(encode(credentials, 'escape'), ' ') FROM integrations))",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let listing = serde_json::to_string(
        &store::integrations::list(&db.pool, Some(p), None)
            .await
            .unwrap(),
    )
    .unwrap();
    let (_, creds) = integrations::load(&db.pool, &Keys::parse(&k).unwrap(), x_id)
        .await
        .unwrap();
    let debug = format!("{creds:?} {:?}", Keys::parse(&k).unwrap());
    for s in &secrets {
        for (what, text) in [
            ("logs", &logs),
            ("rows", &rows),
            ("integrations list --json", &listing),
            ("Debug", &debug),
        ] {
            assert!(
                !text.contains(s.as_str()),
                "a secret ({}…) appears in {what}",
                &s[..4]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_tests_read_each_platform_and_set_the_status() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let keys = Arc::new(Keys::parse(&k).unwrap());
    let settings = fast_settings();
    let p = project(&db).await;
    let p2 = project(&db).await;
    let mut ids = Vec::new();
    for platform in [
        Platform::Wordpress,
        Platform::Linkedin,
        Platform::X,
        Platform::Facebook,
    ] {
        ids.push((platform, connect(&db, &fake, &k, p, platform).await));
    }
    ids.push((
        Platform::Shopify,
        connect(&db, &fake, &k, p2, Platform::Shopify).await,
    ));
    let check = |id: Uuid| {
        let (db, keys, settings) = (db.pool.clone(), keys.clone(), settings.publish.clone());
        async move {
            let loaded = integrations::load(&db, &keys, id).await.unwrap();
            let ctx = copydesk::publish::Ctx::new(
                copydesk::publish::client(&settings),
                db,
                settings,
                loaded,
                None,
                Some(keys),
            );
            copydesk::publish::check(&ctx).await
        }
    };
    for (platform, id) in &ids {
        let seen = check(*id).await;
        assert!(seen.is_ok(), "{platform}: {seen:?}");
    }
    fake.revoke(Platform::Shopify);
    let err = check(ids[4].1).await.unwrap_err();
    assert!(
        // A 401: the token was not taken.
        matches!(&err, copydesk::publish::CallError::TokenRefused(m) if m.contains("Invalid API key or access token")),
        "{err:?}"
    );
    // Each check wrote a runs row without a job.
    let reads = count(
        &db.pool,
        "SELECT count(*) FROM runs WHERE job_id IS NULL AND agent = 'publisher'",
    )
    .await;
    assert!(reads >= 6, "{reads}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_reconciled_and_an_unconfirmable_one_asks_the_operator() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::Linkedin).await;
    connect(&db, &fake, &k, p, Platform::Shopify).await;
    // Both platforms keep the post and answer 502 (Retry-After: 1).
    fake.lose_answers(Platform::Shopify, true);
    fake.lose_answers(Platform::Linkedin, true);
    let (shop_draft, a) = draft_awaiting_approval(&db, p, "blog", "Linen care", BLOG, None).await;
    let shop_job = approve(&db, &settings, a).await;
    let (_, b) =
        draft_awaiting_approval(&db, p, "linkedin", "", "Linen care (part 2) #linen", None).await;
    let li_job = approve(&db, &settings, b).await;
    drain(&r).await;
    for job in [shop_job, li_job] {
        assert_eq!(status_of(&db.pool, job).await, "queued");
        let error = attempts_and_error(&db.pool, job).await.1.unwrap();
        assert!(
            error.contains("502") && error.contains("looks the post up"),
            "{error}"
        );
    }
    fake.lose_answers(Platform::Shopify, false);
    fake.lose_answers(Platform::Linkedin, false);
    // LinkedIn without the read scope: the lookup is refused, so nobody can be sure.
    fake.deny_reads(Platform::Linkedin);
    wait_for(Duration::from_secs(10), "the second attempts", || async {
        drain(&r).await;
        status_of(&db.pool, shop_job).await == "done"
            && status_of(&db.pool, li_job).await == "failed"
    })
    .await;
    assert_eq!(fake.posts_on(Platform::Shopify).len(), 1);
    assert_eq!(publication(&db, shop_draft).await["how"], "reconciled");
    assert_eq!(
        fake.posts_on(Platform::Linkedin).len(),
        1,
        "not posted a second time"
    );
    let error = attempts_and_error(&db.pool, li_job).await.1.unwrap();
    assert!(
        error.contains("may have posted to linkedin")
            && error.contains("Check the LinkedIn feed of urn:li:organization:5515715")
            && error.contains("copydesk publish"),
        "{error}"
    );
    // A person is told where to look, once: not again as a plain failure.
    assert_eq!(
        raised(&db).await,
        [("publication_unconfirmed".into(), 1, Some(li_job))],
    );
    let body: String =
        sqlx::query_scalar("SELECT body FROM notifications WHERE kind = 'publication_unconfirmed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(body, error);
}

/// Runs publishing jobs until `job` has finished (a retry waits for its Retry-After).
async fn run_until_finished(db: &TestDb, r: &Runner<App>, job: Uuid) {
    wait_for(Duration::from_secs(20), "the job to finish", || async {
        drain(r).await;
        matches!(status_of(&db.pool, job).await.as_str(), "done" | "failed")
    })
    .await;
}

async fn external_id(db: &TestDb, job: Uuid) -> String {
    sqlx::query_scalar("SELECT output->>'external_id' FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Two publishing jobs whose posts look alike, the second one's answer lost: its retry
/// finds its own post, never the first job's. Blog destinations are told apart by the
/// job's own slug or handle (the random tail of its id: two jobs created in the same
/// instant for drafts of the same title used to send the same slug, and WordPress
/// quietly stored the second as `…-2`); social posts, which carry no identifier, by
/// when they were made and by which job recorded them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_never_takes_another_jobs_post_for_its_own() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);

    // Two projects publishing to the same WordPress site, and two to the same shop,
    // with drafts of the same title.
    for platform in [Platform::Wordpress, Platform::Shopify] {
        let (p1, p2) = (project(&db).await, project(&db).await);
        connect(&db, &fake, &k, p1, platform).await;
        connect(&db, &fake, &k, p2, platform).await;
        let (_, a1) = draft_awaiting_approval(&db, p1, "blog", "Why linen lasts", BLOG, None).await;
        let (_, a2) = draft_awaiting_approval(&db, p2, "blog", "Why linen lasts", BLOG, None).await;
        let first = approve(&db, &settings, a1).await;
        run_until_finished(&db, &r, first).await;
        // Within the same second: the same 8 leading hex digits of a v7 id.
        let second = approve(&db, &settings, a2).await;
        fake.lose_answers(platform, true);
        drain(&r).await;
        assert_eq!(status_of(&db.pool, second).await, "queued", "{platform}");
        fake.lose_answers(platform, false);
        run_until_finished(&db, &r, second).await;
        assert_eq!(status_of(&db.pool, second).await, "done", "{platform}");
        let posts = fake.posts_on(platform);
        assert_eq!(posts.len(), 2, "{platform}: {posts:?}");
        assert_ne!(posts[0].slug, posts[1].slug, "{platform}");
        assert_eq!(external_id(&db, first).await, posts[0].id, "{platform}");
        assert_eq!(
            external_id(&db, second).await,
            posts[1].id,
            "{platform}: the second job found its own post"
        );
        let output: Value = sqlx::query_scalar("SELECT output FROM jobs WHERE id = $1")
            .bind(second)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(output["how"], "reconciled", "{platform}");
    }

    // Social posts: the same draft published once, then again on purpose (`--again`);
    // the second job's request fails before the platform keeps anything. Its retry
    // sees the first job's post, with the same text: not its own.
    let p = project(&db).await;
    for platform in [Platform::Linkedin, Platform::X, Platform::Facebook] {
        let integration = connect(&db, &fake, &k, p, platform).await;
        let text = format!("Linen that lasts, again on {platform}.");
        let channel = platform.channel().as_str();
        let (draft, a) = draft_awaiting_approval(&db, p, channel, "", &text, None).await;
        let first = approve(&db, &settings, a).await;
        run_until_finished(&db, &r, first).await;
        assert_eq!(status_of(&db.pool, first).await, "done", "{platform}");
        let mut conn = db.pool.acquire().await.unwrap();
        let again = copydesk::pipeline::publication::request(
            &mut conn,
            &catalog(),
            settings.publish.facebook_min_schedule_minutes,
            &copydesk::pipeline::publication::PublicationRequest {
                artifact: draft,
                integration: Some(integration),
                at: None,
                again: true,
                parent: None,
                by: None,
            },
        )
        .await
        .unwrap();
        drop(conn);
        let second = again.job.id;
        fake.drop_creates(platform, true);
        drain(&r).await;
        assert_eq!(status_of(&db.pool, second).await, "queued", "{platform}");
        fake.drop_creates(platform, false);
        run_until_finished(&db, &r, second).await;
        let posts = fake.posts_on(platform);
        let error = attempts_and_error(&db.pool, second)
            .await
            .1
            .unwrap_or_default();
        if platform == Platform::Linkedin {
            // LinkedIn takes the same text twice: the second job posts its own.
            assert_eq!(status_of(&db.pool, second).await, "done", "{error}");
            assert_eq!(posts.len(), 2, "{posts:?}");
            assert_eq!(external_id(&db, second).await, posts[1].id);
            assert_ne!(
                external_id(&db, first).await,
                external_id(&db, second).await
            );
        } else {
            // X and Facebook refuse the same text as a duplicate: the only matching
            // post is the first job's, so the second job says so instead of claiming it.
            assert_eq!(status_of(&db.pool, second).await, "failed", "{platform}");
            assert!(
                error.contains("refused the post as a duplicate")
                    && error.contains("no matching post of this job"),
                "{platform}: {error}"
            );
            assert_eq!(posts.len(), 1, "{platform}: {posts:?}");
            let claimed = count(
                &db.pool,
                &format!(
                    "SELECT count(*) FROM publish_attempts WHERE job_id = '{second}' AND state = 'sent'"
                ),
            )
            .await;
            assert_eq!(
                claimed, 0,
                "{platform}: the first job's post stays the first job's"
            );
        }
    }
}

/// WordPress and Shopify show the post's title themselves: a blog draft that starts
/// with its title as a `#` heading is published without it (and names the post when
/// the draft has no title of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blog_drafts_title_heading_is_not_published_twice() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let draft = "# Why linen lasts\n\nWoven **slowly** in small mills.\n\n## Care\n\nWash cool.\n";
    for (platform, title) in [
        (Platform::Wordpress, "Why linen lasts"),
        (Platform::Shopify, ""),
    ] {
        let p = project(&db).await;
        connect(&db, &fake, &k, p, platform).await;
        let (_, a) = draft_awaiting_approval(&db, p, "blog", title, draft, None).await;
        let job = approve(&db, &settings, a).await;
        run_until_finished(&db, &r, job).await;
        assert_eq!(status_of(&db.pool, job).await, "done", "{platform}");
        let post = fake.posts_on(platform).pop().unwrap();
        assert_eq!(post.text, "Why linen lasts", "{platform}: the title");
        assert!(
            !post.body.contains("<h1>") && !post.body.contains("Why linen lasts"),
            "{platform}: the title is not in the body: {}",
            post.body
        );
        assert!(
            post.body.contains("<strong>slowly</strong>") && post.body.contains("<h2>Care</h2>"),
            "{platform}: {}",
            post.body
        );
    }
}

/// A LinkedIn token the credentials say expires in three days, and an API version
/// released eleven months ago (LinkedIn retires a version about a year after its
/// month): each post and each `integrations test` tells the integration's tenant, one
/// row per cause counting the checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_and_a_retiring_version_are_told_at_each_post_and_test() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    let (mut creds, mut meta) = fake.integration(Platform::Linkedin);
    let expires = Utc::now() + chrono::Duration::days(3);
    creds["expires_at"] = json!(expires.to_rfc3339());
    let version = Utc::now()
        .checked_sub_months(chrono::Months::new(11))
        .unwrap()
        .format("%Y%m")
        .to_string();
    meta["api_version"] = json!(version);
    let keys = Arc::new(Keys::parse(&k).unwrap());
    let li = integrations::connect(
        &db.pool,
        &keys,
        p,
        Platform::Linkedin,
        &creds,
        &meta,
        "test",
    )
    .await
    .unwrap();
    let (_, a) = draft_awaiting_approval(&db, p, "linkedin", "", "Linen news.", None).await;
    let job = approve(&db, &settings, a).await;
    drain(&r).await;
    assert_eq!(
        status_of(&db.pool, job).await,
        "done",
        "a warning stops nothing"
    );
    let tested = integrations::test(&db.pool, &settings.publish, keys, li, "ops")
        .await
        .unwrap();
    assert!(tested.ok, "{tested:?}");

    let rows: Vec<(String, String, i32, String, Value)> = sqlx::query_as(
        "SELECT kind, severity, count, title, data FROM notifications
          WHERE kind <> 'approval_waiting' ORDER BY kind",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (kind, severity, count, title, data) = &rows[0];
    assert_eq!(
        (kind.as_str(), severity.as_str(), *count),
        ("api_version_retiring", "warning", 2)
    );
    assert!(
        title.starts_with(&format!("linkedin API version {version} retires about ")),
        "{title}"
    );
    assert_eq!(data["version"], version);
    let (kind, severity, count, title, data) = &rows[1];
    assert_eq!(
        (kind.as_str(), severity.as_str(), *count),
        ("token_expiring", "warning", 2)
    );
    assert!(
        title.ends_with(&format!("day(s), on {}", expires.format("%Y-%m-%d"))),
        "{title}"
    );
    assert_eq!(data["integration_id"], li.to_string());
    // Nothing of the token itself is in the notification.
    let access = creds["access_token"].as_str().unwrap();
    assert!(!format!("{rows:?}").contains(access));
}

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xff\x89\x99=\x1d\0\0\0\0IEND\xaeB`\x82";

/// Settings whose file store is `dir`, and an image put there for `project`.
async fn image_in(db: &TestDb, dir: &std::path::Path, project: Uuid) -> (Settings, Uuid) {
    let mut settings = fast_settings();
    settings.files.local_dir = dir.to_str().unwrap().to_owned();
    let (id, _) = copydesk::files::Files::new(&settings)
        .unwrap()
        .put(
            &db.pool,
            &copydesk::files::Put {
                tenant: copydesk::domain::DEFAULT_TENANT,
                project: Some(project),
                kind: copydesk::domain::FileKind::Image,
                name: "linen.png",
                bytes: PNG,
            },
            "test",
        )
        .await
        .unwrap();
    (settings, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blog_drafts_image_is_wordpress_featured_media_and_the_shopify_article_image() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let files = tempfile::tempdir().unwrap();
    let (wp, shop) = (project(&db).await, project(&db).await);
    connect(&db, &fake, &k, wp, Platform::Wordpress).await;
    connect(&db, &fake, &k, shop, Platform::Shopify).await;
    let (settings, image) = image_in(&db, files.path(), wp).await;
    let (wp_draft, a) =
        draft_awaiting_approval(&db, wp, "blog", "Linen that lasts", BLOG, None).await;
    let (shop_draft, b) =
        draft_awaiting_approval(&db, shop, "blog", "Linen that lasts", BLOG, None).await;
    let (x_draft, _) = draft_awaiting_approval(&db, wp, "x", "", "Linen, on X.", None).await;
    let notes: Uuid = sqlx::query_scalar(
        "INSERT INTO files (tenant_id, kind, name, sha256, size, content_type, storage_key, created_by)
         VALUES ($1, 'sample', 'voice.md', repeat('a', 64), 5, 'text/markdown', 'k', 'test') RETURNING id",
    )
    .bind(copydesk::domain::DEFAULT_TENANT)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // Naming it: only a blog draft takes a picture, and only an image is one.
    let attach = |file: Uuid, draft: Uuid| {
        copydesk(
            &db,
            &[
                "files",
                "attach",
                &file.to_string(),
                "--draft",
                &draft.to_string(),
            ],
        )
    };
    let (ok, _, err) = attach(image, x_draft);
    assert!(!ok);
    assert!(
        err.contains(&format!("artifact {x_draft} is not a blog draft")),
        "{err}"
    );
    let (ok, _, err) = attach(notes, wp_draft);
    assert!(!ok);
    assert!(
        err.contains(&format!("file {notes} is text/markdown, not an image")),
        "{err}"
    );
    for draft in [wp_draft, shop_draft] {
        let (ok, out, err) = attach(image, draft);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("draft {draft} publishes with image {image}")),
            "{out}"
        );
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'file.attached'"
        )
        .await,
        2
    );
    // A later version of the draft (a rewrite, an edit) keeps its picture.
    let v2: Uuid = sqlx::query_scalar(
        "INSERT INTO artifacts (project_id, kind, channel, version, based_on_id, source, title, content)
         VALUES ($1, 'draft', 'blog', 2, $2, 'human', 'Linen that lasts', 'Edited.') RETURNING id",
    )
    .bind(wp)
    .bind(wp_draft)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let inherited = store::files::image_of(&db.pool, v2).await.unwrap().unwrap();
    assert_eq!(inherited.id, image);

    let r = publish_runner(&db, settings.clone(), &k);
    let wp_job = approve(&db, &settings, a).await;
    let shop_job = approve(&db, &settings, b).await;
    drain(&r).await;
    assert_eq!(
        status_of(&db.pool, wp_job).await,
        "done",
        "{:?}",
        attempts_and_error(&db.pool, wp_job).await
    );
    assert_eq!(
        status_of(&db.pool, shop_job).await,
        "done",
        "{:?}",
        attempts_and_error(&db.pool, shop_job).await
    );
    let media = fake.media();
    assert_eq!(media.len(), 1, "{media:?}");
    assert_eq!(media[0].bytes, PNG);
    assert_eq!(media[0].mime_type, "image/png");
    let post = &fake.posts_on(Platform::Wordpress)[0];
    assert_eq!(
        post.image.as_deref(),
        Some(media[0].id.to_string().as_str())
    );
    assert!(
        media[0].slug.starts_with(post.slug.as_deref().unwrap()),
        "{media:?} {post:?}"
    );
    let article = &fake.posts_on(Platform::Shopify)[0];
    assert_eq!(
        article.image.as_deref(),
        Some(format!("linen.png, {} bytes", PNG.len()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_media_upload_leaves_one_media_item() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let files = tempfile::tempdir().unwrap();
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::Wordpress).await;
    let (settings, image) = image_in(&db, files.path(), p).await;
    let (draft, a) = draft_awaiting_approval(&db, p, "blog", "Linen that lasts", BLOG, None).await;
    store::files::attach_image(&db.pool, draft, image)
        .await
        .unwrap();
    // WordPress keeps the upload, then holds its answer back: the worker dies waiting.
    fake.hold_answers(Some(Duration::from_secs(60)));
    let env = [
        ("COPYDESK_FERNET_KEYS", k.as_str()),
        ("COPYDESK__WORKER__LEASE_SECS", "2"),
        ("COPYDESK__LLM__PROVIDER", "offline"),
        ("COPYDESK__FILES__LOCAL_DIR", files.path().to_str().unwrap()),
    ];
    let mut first = spawn_worker(&db, &["--kinds", "publishing"], &env);
    let job = approve(&db, &settings, a).await;
    wait_for(
        Duration::from_secs(20),
        "the upload to reach WordPress",
        || async { fake.media().len() == 1 },
    )
    .await;
    signal(&first, nix::sys::signal::Signal::SIGKILL);
    first.wait().unwrap();
    fake.hold_answers(None);
    assert!(fake.posts().is_empty());
    let _second = spawn_worker(&db, &["--kinds", "publishing"], &env);
    wait_for(
        Duration::from_secs(30),
        "the post after the rescue",
        || async { status_of(&db.pool, job).await == "done" },
    )
    .await;
    let media = fake.media();
    assert_eq!(media.len(), 1, "{media:?}");
    let posts = fake.posts_on(Platform::Wordpress);
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].image.as_deref(),
        Some(media[0].id.to_string().as_str())
    );
    let uploads = fake
        .requests()
        .iter()
        .filter(|r| *r == "POST /wordpress/wp-json/wp/v2/media")
        .count();
    assert_eq!(uploads, 1, "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_text_to_the_same_integration_is_refused_within_the_window_unless_again() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let settings = fast_settings();
    let p = project(&db).await;
    let wp = connect(&db, &fake, &k, p, Platform::Wordpress).await;
    let r = publish_runner(&db, settings.clone(), &k);
    let posts = || fake.posts_on(Platform::Wordpress).len();

    let (_, a) = draft_awaiting_approval(&db, p, "blog", "Linen that lasts", BLOG, None).await;
    let first = approve(&db, &settings, a).await;
    drain(&r).await;
    assert_eq!(status_of(&db.pool, first).await, "done");
    let url = fake.posts_on(Platform::Wordpress)[0].slug.clone().unwrap();

    // Another draft saying the same (other spacing and case): refused before any call,
    // with the first post's link and how to post it anyway.
    let same = BLOG.to_uppercase().replace("\n\n", "\n  \n");
    let (second_draft, b) =
        draft_awaiting_approval(&db, p, "blog", "LINEN  that lasts", &same, None).await;
    let second = approve(&db, &settings, b).await;
    let requests = fake.requests().len();
    drain(&r).await;
    assert_eq!(status_of(&db.pool, second).await, "failed");
    let (_, error) = attempts_and_error(&db.pool, second).await;
    let error = error.unwrap();
    assert!(
        error.contains("not sent: the same text went to wordpress"),
        "{error}"
    );
    assert!(error.contains(&url), "{error}");
    assert!(
        error.contains(&format!(
            "copydesk publish {second_draft} --integration {wp} --again"
        )),
        "{error}"
    );
    assert_eq!(posts(), 1);
    assert_eq!(fake.requests().len(), requests, "no call was made");

    // Asked again, it goes out.
    let (ok, _, err) = copydesk(
        &db,
        &[
            "publish",
            &second_draft.to_string(),
            "--integration",
            &wp.to_string(),
            "--again",
        ],
    );
    assert!(ok, "{err}");
    drain(&r).await;
    assert_eq!(posts(), 2);

    // Two jobs with the same new text at once: one posts, the other is refused.
    let text = "## Summer linen\n\nLight, cool, made to be mended.\n";
    let (_, c) = draft_awaiting_approval(&db, p, "blog", "Summer linen", text, None).await;
    let (_, d) = draft_awaiting_approval(&db, p, "blog", "Summer linen", text, None).await;
    let racers = [
        approve(&db, &settings, c).await,
        approve(&db, &settings, d).await,
    ];
    let r2 = publish_runner(&db, settings.clone(), &k);
    let (x, y) = tokio::join!(
        run_once(&r, &["publishing"]),
        run_once(&r2, &["publishing"])
    );
    x.unwrap();
    y.unwrap();
    drain(&r).await;
    let mut statuses = vec![
        status_of(&db.pool, racers[0]).await,
        status_of(&db.pool, racers[1]).await,
    ];
    statuses.sort();
    assert_eq!(statuses, ["done", "failed"]);
    assert_eq!(posts(), 3);

    // Past the window the same text may go out again.
    sqlx::query("UPDATE publish_attempts SET created_at = now() - interval '8 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, e) = draft_awaiting_approval(&db, p, "blog", "Summer linen", text, None).await;
    let later = approve(&db, &settings, e).await;
    drain(&r).await;
    assert_eq!(status_of(&db.pool, later).await, "done");
    assert_eq!(posts(), 4);
}

/// Runs one `token_refresh` job, inserted by plain SQL as the scheduler would, to its
/// end; returns its id.
async fn token_refresh_tick(db: &TestDb, r: &Runner<App>) -> Uuid {
    let job: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input) VALUES ('token_refresh', '{}') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    while run_once(r, &["token_refresh"]).await.unwrap().is_some() {}
    job
}

#[tokio::test]
async fn the_token_refresh_of_a_worker_without_keys_fails_nothing_and_warns_once_when_it_matters() {
    let db = test_db().await;
    // No Fernet keys (a worker before anyone connected an integration): the scheduled
    // refresh has nothing to read, so nothing to fail for.
    let r = publish_runner(&db, fast_settings(), "");
    let id = token_refresh_tick(&db, &r).await;
    assert_eq!(status_of(&db.pool, id).await, "done");

    // With an X integration to refresh, the missing keys are a warning that names
    // them, said once and counted at each tick, not a failed job per tick.
    let k = Keys::generate();
    let fake = FakePlatforms::start().await.unwrap();
    let (creds, meta) = fake.integration(Platform::X);
    let p = project(&db).await;
    let keys = Keys::parse(&k).unwrap();
    integrations::connect(&db.pool, &keys, p, Platform::X, &creds, &meta, "test")
        .await
        .unwrap();
    for _ in 0..3 {
        let id = token_refresh_tick(&db, &r).await;
        assert_eq!(status_of(&db.pool, id).await, "done");
    }
    let warning = || async {
        sqlx::query_as::<_, (String, String, i32, Option<String>)>(
            "SELECT severity, title, count, read_by FROM notifications
              WHERE kind = 'credentials_unreadable'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let told = warning().await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].0.as_str(), told[0].2, told[0].3.as_deref()),
        ("warning", 3, None)
    );
    assert!(told[0].1.contains("COPYDESK_FERNET_KEYS"), "{told:?}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'failed'"
        )
        .await,
        0
    );
    // Fixed (the workers have the keys): the next tick resolves it.
    let fixed = publish_runner(&db, fast_settings(), &k);
    let id = token_refresh_tick(&db, &fixed).await;
    assert_eq!(status_of(&db.pool, id).await, "done");
    let told = warning().await;
    assert_eq!(
        told[0].3.as_deref(),
        Some("copydesk (the keys read them again)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_tokens_are_refreshed_ahead_of_expiry_by_the_scheduled_job_once_across_racers() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let keys = Keys::parse(&k).unwrap();
    let settings = fast_settings();
    let p = project(&db).await;
    // A token pair that expires in ten minutes.
    let expiring = |minutes: i64| {
        let (mut creds, meta) = fake.integration(Platform::X);
        creds["expires_at"] = json!((Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339());
        (creds, meta)
    };
    let (creds, meta) = expiring(10);
    let x = integrations::connect(&db.pool, &keys, p, Platform::X, &creds, &meta, "test")
        .await
        .unwrap();
    let r = publish_runner(&db, settings.clone(), &k);
    let tick = || async {
        let job = token_refresh_tick(&db, &r).await;
        assert_eq!(status_of(&db.pool, job).await, "done");
        sqlx::query_scalar::<_, Value>("SELECT output FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let token_calls = || {
        fake.requests()
            .iter()
            .filter(|r| *r == "POST /x/2/oauth2/token")
            .count()
    };
    let out = tick().await;
    assert_eq!(
        out,
        json!({"checked": 1, "refreshed": 1, "failed": 0, "unreadable": 0})
    );
    assert_eq!(token_calls(), 1);
    let (_, stored) = integrations::load(&db.pool, &keys, x).await.unwrap();
    let (now_valid, _) = fake.integration(Platform::X);
    assert_eq!(
        stored.get("access_token"),
        now_valid["access_token"].as_str()
    );
    let expires = chrono::DateTime::parse_from_rfc3339(stored.get("expires_at").unwrap()).unwrap();
    assert!(
        expires > Utc::now() + chrono::Duration::minutes(100),
        "{expires}"
    );
    // Not due again: nothing is called.
    assert_eq!(
        tick().await,
        json!({"checked": 1, "refreshed": 0, "failed": 0, "unreadable": 0})
    );
    assert_eq!(token_calls(), 1);

    // Two processes finding the same pair due at once: one refresh (X's refresh
    // tokens are single-use: a second would be refused and break the integration).
    let (creds, meta) = expiring(5);
    integrations::connect(&db.pool, &keys, p, Platform::X, &creds, &meta, "test")
        .await
        .unwrap();
    let racer = || async {
        let loaded = integrations::load(&db.pool, &keys, x).await.unwrap();
        let ctx = copydesk::publish::Ctx::new(
            copydesk::publish::client(&settings.publish),
            db.pool.clone(),
            settings.publish.clone(),
            loaded,
            None,
            Some(Arc::new(Keys::parse(&k).unwrap())),
        );
        copydesk::publish::x::refresh_ahead(&ctx, chrono::Duration::minutes(30)).await
    };
    let (a, b) = tokio::join!(racer(), racer());
    // (A racer that read the pair after the other stored it has nothing to do.)
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert_eq!(token_calls(), 2, "one refresh for both racers");
    let (_, stored) = integrations::load(&db.pool, &keys, x).await.unwrap();
    let (now_valid, _) = fake.integration(Platform::X);
    assert_eq!(
        stored.get("access_token"),
        now_valid["access_token"].as_str()
    );

    // A refresh X refuses marks the integration error, and tells someone.
    let (mut creds, meta) = expiring(5);
    creds["refresh_token"] = json!("revoked-by-the-user");
    integrations::connect(&db.pool, &keys, p, Platform::X, &creds, &meta, "test")
        .await
        .unwrap();
    assert_eq!(
        tick().await,
        json!({"checked": 1, "refreshed": 0, "failed": 1, "unreadable": 0})
    );
    let status: String = sqlx::query_scalar("SELECT status FROM integrations WHERE id = $1")
        .bind(x)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "error");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM notifications WHERE kind = 'credentials_refused'"
        )
        .await,
        1
    );
}

/// What a subscriber's webhook saw: each message's id, type and data, and whether the
/// Standard Webhooks library verified it; it refuses the first `fail_first` with 503.
#[derive(Default)]
struct Subscriber {
    messages: Vec<(String, String, Value, bool)>,
    fail_first: usize,
}

async fn subscriber(
    axum::extract::State((secret, seen)): axum::extract::State<(String, Arc<Mutex<Subscriber>>)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let verified = standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&body, &headers)
        .is_ok();
    let message: Value = serde_json::from_slice(&body).unwrap();
    let mut s = seen.lock().unwrap();
    s.messages.push((
        headers["webhook-id"].to_str().unwrap().to_owned(),
        message["type"].as_str().unwrap().to_owned(),
        message["data"].clone(),
        verified,
    ));
    if s.fail_first > 0 {
        s.fail_first -= 1;
        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    axum::http::StatusCode::NO_CONTENT
}

/// Subscribes `url` through the CLI: the subscription's id and its secret.
fn subscribe(db: &TestDb, keys: &str, args: &[&str]) -> (Uuid, String) {
    let env = [
        ("COPYDESK_FERNET_KEYS", keys),
        ("COPYDESK__FETCH__ALLOW_LOOPBACK", "true"),
    ];
    let mut all = vec!["events", "subscribe"];
    all.extend_from_slice(args);
    let (ok, out, err) = copydesk_at(&db.url, &env, &all);
    assert!(ok, "{err}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .parse()
        .unwrap();
    (id, out.lines().last().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_service_hears_each_step_of_a_publication_signed_once_per_event() {
    let db = test_db().await;
    let fake = FakePlatforms::start().await.unwrap();
    let k = Keys::generate();
    let mut settings = fast_settings();
    settings.fetch.allow_loopback = true;
    let r = publish_runner(&db, settings.clone(), &k);
    let p = project(&db).await;
    connect(&db, &fake, &k, p, Platform::Wordpress).await;
    connect(&db, &fake, &k, p, Platform::X).await;
    // Another tenant's service, subscribed to everything of its own tenant.
    let (ok, _, err) = copydesk(&db, &["tenants", "create", "acme", "--name", "Acme"]);
    assert!(ok, "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let ours = format!("{base}/hooks/ours");
    let theirs = format!("{base}/hooks/acme");
    let (sub, secret) = subscribe(&db, &k, &[&ours, "--project", &p.to_string()]);
    let (_, acme_secret) = subscribe(&db, &k, &[&theirs, "--tenant", "acme"]);
    // Refused before anything is written: a type that is not one.
    let (ok, _, err) = copydesk_at(
        &db.url,
        &[
            ("COPYDESK_FERNET_KEYS", k.as_str()),
            ("COPYDESK__FETCH__ALLOW_LOOPBACK", "true"),
        ],
        &[
            "events",
            "subscribe",
            &ours,
            "--event",
            "publication.posted",
        ],
    );
    assert!(
        !ok && err.contains("publication.posted") && err.contains("publication.made"),
        "{err}"
    );
    let seen = Arc::new(Mutex::new(Subscriber {
        fail_first: 1,
        ..Subscriber::default()
    }));
    let acme_seen = Arc::new(Mutex::new(Subscriber::default()));
    let app = axum::Router::new()
        .route("/hooks/ours", axum::routing::post(subscriber))
        .with_state((secret, seen.clone()))
        .merge(
            axum::Router::new()
                .route("/hooks/acme", axum::routing::post(subscriber))
                .with_state((acme_secret, acme_seen.clone())),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Runs deliveries (a refused one comes back after its backoff) until all are taken.
    let delivered = |what: &'static str| {
        wait_for(Duration::from_secs(30), what, || async {
            while run_once(&r, &["deliver_event"]).await.unwrap().is_some() {}
            count(
                &db.pool,
                "SELECT count(*) FROM event_deliveries WHERE status <> 'delivered'",
            )
            .await
                == 0
        })
    };

    // A draft waiting whose transaction rolls back raises nothing.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO artifacts (project_id, kind, channel, content) VALUES ($1, 'draft', 'blog', 'x')")
        .bind(p)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 0);

    // Waiting, decided by plain SQL, published: each told once, in order, signed.
    let (draft, approval) =
        draft_awaiting_approval(&db, p, "blog", "Why linen lasts", BLOG, None).await;
    sqlx::query(
        "UPDATE approvals SET status = 'approved', decided_by = 'shop-service' WHERE id = $1",
    )
    .bind(approval)
    .execute(&db.pool)
    .await
    .unwrap();
    let applied = decisions::apply_decided(&db.pool, &catalog(), &settings, 10)
        .await
        .unwrap();
    let job = applied[0].enqueued[0];
    drain(&r).await;
    assert_eq!(status_of(&db.pool, job).await, "done");
    let made = publication(&db, draft).await;
    delivered("every event delivered").await;
    let messages = seen.lock().unwrap().messages.clone();
    assert!(
        messages.iter().all(|m| m.3),
        "a message failed verification: {messages:?}"
    );
    // The first was refused once and sent again, later, under the same id.
    let refused = &messages[0].0;
    assert_eq!(
        messages.iter().filter(|m| &m.0 == refused).count(),
        2,
        "{messages:?}"
    );
    let mut told: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if messages[..i].iter().all(|earlier| earlier.0 != m.0) {
            told.push(m.1.as_str());
        }
    }
    assert_eq!(
        told,
        [
            "approval.waiting",
            "approval.decided",
            "publication.made",
            "pipeline.channel_finished"
        ]
    );
    let ids: std::collections::BTreeSet<&str> = messages.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(ids.len(), 4, "one id per event: {ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("evt_")), "{ids:?}");
    let data = |t: &str| messages.iter().find(|m| m.1 == t).unwrap().2.clone();
    assert_eq!(data("approval.waiting")["approval_id"], json!(approval));
    assert_eq!(data("approval.waiting")["channel"], "blog");
    assert_eq!(data("approval.decided")["decided_by"], "shop-service");
    assert_eq!(data("approval.decided")["status"], "approved");
    let published = data("publication.made");
    assert_eq!(published["url"], made["url"], "{published}");
    assert_eq!(published["external_id"], made["external_id"], "{published}");
    assert_eq!(published["platform"], "wordpress");
    assert_eq!(published["draft_artifact_id"], json!(draft));
    assert_eq!(published["job_id"], json!(job));
    assert_eq!(data("pipeline.channel_finished")["outcome"], "published");

    // A publication failed for good: told with the platform's words, and the channel.
    let (_, a) = draft_awaiting_approval(&db, p, "x", "", &"麻".repeat(150), None).await;
    let failing = approve(&db, &settings, a).await;
    drain(&r).await;
    assert_eq!(status_of(&db.pool, failing).await, "failed");
    delivered("the failure delivered").await;
    let messages = seen.lock().unwrap().messages.clone();
    let failed = messages
        .iter()
        .find(|m| m.1 == "publication.failed")
        .unwrap()
        .2
        .clone();
    assert_eq!(failed["job_id"], json!(failing));
    assert_eq!(failed["channel"], "x");
    assert!(
        failed["error"].as_str().unwrap().contains("280"),
        "{failed}"
    );
    let finished: Vec<Value> = messages
        .iter()
        .filter(|m| m.1 == "pipeline.channel_finished")
        .map(|m| m.2.clone())
        .collect();
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[1]["outcome"], "failed");

    // A draft rejected at its last iteration ends its channel: rejected, with the notes.
    let (_, last) = draft_awaiting_approval(&db, p, "linkedin", "", "Linen, slowly.", None).await;
    sqlx::query(
        "UPDATE jobs SET input = jsonb_set(input, '{iteration}', '3')
          WHERE id = (SELECT job_id FROM approvals WHERE id = $1)",
    )
    .bind(last)
    .execute(&db.pool)
    .await
    .unwrap();
    decisions::decide(&db.pool, last, false, "ana", Some("not our voice"))
        .await
        .unwrap();
    decisions::apply_decided(&db.pool, &catalog(), &settings, 10)
        .await
        .unwrap();
    delivered("the rejection delivered").await;
    let messages = seen.lock().unwrap().messages.clone();
    let rejected = messages
        .iter()
        .rfind(|m| m.1 == "pipeline.channel_finished")
        .unwrap()
        .2
        .clone();
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert_eq!(rejected["channel"], "linkedin");
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("not our voice"),
        "{rejected}"
    );

    // The other tenant's service heard none of it.
    assert!(acme_seen.lock().unwrap().messages.is_empty());
    // Listed with the last delivery; the deliveries as JSON.
    let (ok, out, err) = copydesk(&db, &["events", "subscriptions", "--json"]);
    assert!(ok, "{err}");
    let subs: Value = serde_json::from_str(&out).unwrap();
    let listed = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == json!(sub))
        .unwrap();
    assert_eq!(listed["last_status"], "delivered", "{listed}");
    assert!(
        listed["target"].as_str().unwrap().ends_with("/…"),
        "{listed}"
    );
    assert!(
        !out.contains("/hooks/ours"),
        "a subscription's path was shown: {out}"
    );
    let (ok, out, err) = copydesk(
        &db,
        &[
            "events",
            "deliveries",
            "--subscription",
            &sub.to_string(),
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let deliveries: Value = serde_json::from_str(&out).unwrap();
    // Three drafts waiting and decided, a publication made and one failed, three
    // channels finished: eleven, newest first; the oldest was refused once.
    assert_eq!(deliveries.as_array().unwrap().len(), 11, "{deliveries}");
    assert_eq!(deliveries[10]["attempts"], 2, "the refused one took two");
}
