//! cache_refresh against a catalogue API on loopback (wiremock) and a real Postgres:
//! counts, expiry, paging, auth, a bad item alone skipped, SSRF refusals, drafts
//! refreshing stale items first, brand voices re-analysed only while in use.

mod common;

use std::sync::Arc;

use common::*;
use copydesk::{
    app::{
        self,
        worker::{WorkerOptions, run as run_worker},
    },
    config::Settings,
    jobs::{App, Services},
    keys::Keys,
    queue::{self, NewJob, Runner, runner::run_once},
    store,
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

fn cache_runner(db: &TestDb, settings: Settings, keys: &str) -> Runner<App> {
    let services = Services {
        keys: Keys::parse(keys).map(Arc::new),
        ..services(settings)
    };
    app::runner(db.pool.clone(), app::registry(), services)
}

async fn enqueue(db: &TestDb, kind: &str, input: Value) -> Uuid {
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, &catalog(), &NewJob::new(kind, input))
        .await
        .unwrap()
        .id
}

async fn run_all(r: &Runner<App>, kinds: &[&str]) {
    while run_once(r, kinds).await.unwrap().is_some() {}
}

async fn output(db: &TestDb, job: Uuid) -> Value {
    sqlx::query_scalar("SELECT coalesce(output, 'null'::jsonb) FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn page(items: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "items": items }))
}

async fn catalogue(pages: Vec<Value>) -> MockServer {
    let server = MockServer::start().await;
    for (i, items) in pages.into_iter().enumerate() {
        Mock::given(method("GET"))
            .and(path("/v1/products"))
            .and(query_param("page", (i + 1).to_string()))
            .and(query_param("per_page", "2"))
            .and(header("authorization", "Bearer cat-token-42"))
            .respond_with(page(items))
            .mount(&server)
            .await;
    }
    server
}

fn catalog_settings(server: &MockServer) -> Settings {
    let mut s = fast_settings();
    s.catalog.url = format!("{}/v1/products", server.uri());
    s.catalog.per_page = 2;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_refresh_counts_inserts_updates_and_unchanged_rows() {
    let db = test_db().await;
    let k = Keys::generate();
    store::settings::put(
        &db.pool,
        Some(&Keys::parse(&k).unwrap()),
        None,
        "catalog_token",
        "cat-token-42",
    )
    .await
    .unwrap();
    let a = json!({"id": 101, "name": "Linen shirt", "designer": "Ona", "price": "89.00", "tags": ["linen", "shirt"]});
    let b = json!({"id": "102", "title": "Linen apron", "price": 35.5, "tags": "kitchen, linen"});
    let c = json!({"external_id": "103", "name": "Tea towel", "category": "kitchen"});
    let bad = json!({"name": "no id at all"});
    let server = catalogue(vec![json!([a, b]), json!([c, bad]), json!([])]).await;
    let r = cache_runner(&db, catalog_settings(&server), &k);

    let job = enqueue(&db, "cache_refresh", json!({"source": "catalog"})).await;
    run_all(&r, &["cache_refresh"]).await;
    assert_eq!(
        status_of(&db.pool, job).await,
        "done",
        "{:?}",
        attempts_and_error(&db.pool, job).await
    );
    assert_eq!(
        output(&db, job).await["counts"],
        // Page 2 was full (an item and a bad one), so page 3 was read too: empty, the end.
        json!({"pages": 3, "inserted": 3, "updated": 0, "unchanged": 0, "skipped": 1})
    );
    let row: (String, Option<String>, Option<f64>, Vec<String>, f64) = sqlx::query_as(
        "SELECT name, designer, price::float8, tags, extract(epoch FROM expires_at - now())::float8
         FROM catalog_items WHERE external_id = '101'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "Linen shirt");
    assert_eq!(row.1.as_deref(), Some("Ona"));
    assert_eq!(row.2, Some(89.0));
    assert_eq!(row.3, ["linen", "shirt"]);
    assert!(
        (row.4 - 86_400.0).abs() < 60.0,
        "expires in 24 h, got {}s",
        row.4
    );
    let tags: Vec<String> =
        sqlx::query_scalar("SELECT tags FROM catalog_items WHERE external_id = '102'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(tags, ["kitchen", "linen"]);

    // The apron's price changes; the rest stays as it was.
    server.reset().await;
    let b2 = json!({"id": "102", "title": "Linen apron", "price": 39.0, "tags": "kitchen, linen"});
    let c_again = json!({"external_id": "103", "name": "Tea towel", "category": "kitchen"});
    for (i, items) in [json!([a, b2]), json!([c_again])].into_iter().enumerate() {
        Mock::given(method("GET"))
            .and(query_param("page", (i + 1).to_string()))
            .respond_with(page(items))
            .mount(&server)
            .await;
    }
    sqlx::query("UPDATE catalog_items SET expires_at = now() - interval '1 hour'")
        .execute(&db.pool)
        .await
        .unwrap();
    let job = enqueue(&db, "cache_refresh", json!({"source": "catalog"})).await;
    run_all(&r, &["cache_refresh"]).await;
    assert_eq!(
        output(&db, job).await["counts"],
        json!({"pages": 2, "inserted": 0, "updated": 1, "unchanged": 2, "skipped": 0})
    );
    let expired = count(
        &db.pool,
        "SELECT count(*) FROM catalog_items WHERE expires_at < now()",
    )
    .await;
    assert_eq!(expired, 0, "a refresh renews every item it saw");
    let price: f64 =
        sqlx::query_scalar("SELECT price::float8 FROM catalog_items WHERE external_id = '102'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(price, 39.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_urls_that_reach_private_addresses_are_refused() {
    let db = test_db().await;
    let server = catalogue(vec![json!([])]).await;
    let port = server.address().port();
    for (url, allow_loopback, expect) in [
        ("http://10.1.2.3/v1/products".to_owned(), true, "private"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            true,
            "metadata",
        ),
        // A name (not a literal address) resolving to loopback, with loopback not allowed.
        (
            format!("http://localhost:{port}/v1/products"),
            false,
            "loopback",
        ),
    ] {
        let mut s = fast_settings();
        s.fetch.allow_loopback = allow_loopback;
        s.catalog.url = url.clone();
        let r = cache_runner(&db, s, "");
        let job = enqueue(&db, "cache_refresh", json!({"source": "catalog"})).await;
        run_all(&r, &["cache_refresh"]).await;
        assert_eq!(status_of(&db.pool, job).await, "failed", "{url}");
        let (attempts, error) = attempts_and_error(&db.pool, job).await;
        let error = error.unwrap();
        assert_eq!(attempts, 1, "a refusal is not retried");
        assert!(
            error.contains("refused") && error.contains(expect),
            "{url}: {error}"
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM catalog_items").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_refresh_stale_catalogue_items_first() {
    let db = test_db().await;
    let a = json!({"id": "201", "name": "Linen duvet, new season", "price": 180});
    let server = catalogue(vec![json!([a])]).await;
    let mut s = catalog_settings(&server);
    s.catalog.per_page = 2;
    let k = Keys::generate();
    store::settings::put(
        &db.pool,
        Some(&Keys::parse(&k).unwrap()),
        None,
        "catalog_token",
        "cat-token-42",
    )
    .await
    .unwrap();
    let r = cache_runner(&db, s, &k);
    sqlx::query("INSERT INTO catalog_items (external_id, name, expires_at) VALUES ('201', 'Linen duvet', now() - interval '2 hours')")
        .execute(&db.pool)
        .await
        .unwrap();
    let bv: Uuid = sqlx::query_scalar(
        "INSERT INTO artifacts (kind, source, content, data) VALUES ('brand_voice', 'ai', 'warm',
           '{\"analysis\": {\"tone\": [\"warm\"], \"audience\": \"makers\", \"vocabulary\": [\"linen\"], \"do\": [], \"dont\": [], \"sample_phrases\": []}}')
         RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let job = enqueue(
        &db,
        "draft_generation",
        json!({"channel": "linkedin", "brand_voice_artifact_id": bv, "catalog_item_ids": ["201"]}),
    )
    .await;
    run_all(&r, &["draft_generation"]).await;
    assert_ne!(
        status_of(&db.pool, job).await,
        "failed",
        "{:?}",
        attempts_and_error(&db.pool, job).await
    );
    let name: String =
        sqlx::query_scalar("SELECT name FROM catalog_items WHERE external_id = '201'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(name, "Linen duvet, new season");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brand_voices_in_use_are_reanalysed_before_they_expire() {
    let db = test_db().await;
    let site = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<html><head><title>Linen</title></head><body><p>Our linen is woven slowly in small mills.</p></body></html>",
            "text/html",
        ))
        .mount(&site)
        .await;
    let store = format!("{}/", site.uri());
    sqlx::query("INSERT INTO projects (name, store_url) VALUES ('Linen', $1)")
        .bind(&store)
        .execute(&db.pool)
        .await
        .unwrap();
    let key = copydesk::jobs::brand_voice_analysis::normalise_url(&store).unwrap();
    for (url, hours) in [
        (key.as_str(), 2),
        ("https://unused.example", 1),
        ("https://later.example", 100),
    ] {
        sqlx::query("INSERT INTO brand_voice_cache (url, analysis, expires_at) VALUES ($1, '{}', now() + make_interval(hours => $2))")
            .bind(url)
            .bind(hours)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let r = cache_runner(&db, fast_settings(), "");
    let job = enqueue(&db, "cache_refresh", json!({"source": "brand_voice"})).await;
    run_all(&r, &["cache_refresh"]).await;
    assert_eq!(status_of(&db.pool, job).await, "done");
    let out = output(&db, job).await;
    assert_eq!(out["refreshed"], json!([key]));
    assert_eq!(out["not_in_use"], 1);
    let (analysis, days): (Value, f64) = sqlx::query_as(
        "SELECT analysis, extract(epoch FROM expires_at - now())::float8 / 86400 FROM brand_voice_cache WHERE url = $1",
    )
    .bind(&key)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(analysis["tone"].is_array(), "{analysis}");
    assert!((days - 7.0).abs() < 0.01, "{days}");
    let untouched = count(
        &db.pool,
        "SELECT count(*) FROM brand_voice_cache WHERE analysis = '{}'",
    )
    .await;
    assert_eq!(untouched, 2);
    assert_eq!(site.received_requests().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_schedule_one_cache_refresh_per_source_per_tick() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.catalog.enabled = true;
    settings.catalog.schedule = "* * * * * *".into(); // every second
    settings.catalog.url = "https://catalogue.example/v1/products".into();
    settings.cleanup.enabled = false;
    let opts = WorkerOptions {
        kinds: Some(vec!["noop".into()]), // leave the refresh jobs queued, to count them
        scheduler: true,
        ..WorkerOptions::default()
    };
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        workers.push(tokio::spawn(run_worker(
            runner(&db, settings.clone(), app::registry()),
            opts.clone(),
            async move {
                let _ = rx.await;
            },
        )));
    }
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    for s in stops {
        s.send(()).unwrap();
    }
    for w in workers {
        w.await.unwrap().unwrap();
    }
    let per_source: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT input->>'source', count(*), count(DISTINCT idempotency_key) FROM jobs
         WHERE kind = 'cache_refresh' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_source.len(), 2, "{per_source:?}");
    for (source, jobs, keys) in &per_source {
        assert!(
            (2..=5).contains(jobs),
            "{source}: about one per second: {per_source:?}"
        );
        assert_eq!(
            jobs, keys,
            "{source}: one job per tick, however many workers tick"
        );
    }
    assert_eq!(per_source[0].1, per_source[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_that_refuses_for_want_of_a_token_is_one_warning_not_a_failed_job_a_day() {
    let db = test_db().await;
    let k = Keys::generate();
    // Answers 401 to a request without the token, the catalogue to one with it.
    let server = catalogue(vec![json!([{"id": 1, "name": "Linen shirt"}])]).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "unauthorized"})))
        .mount(&server)
        .await;
    let r = cache_runner(&db, catalog_settings(&server), &k);
    let notes = || async {
        sqlx::query_as::<_, (String, String, String, i32, Option<String>)>(
            "SELECT severity, title, body, count, read_by FROM notifications ORDER BY created_at",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    // Two days' refreshes with no token: both done, one warning counted twice, and
    // nothing failed (no job_failed either).
    for _ in 0..2 {
        let job = enqueue(&db, "cache_refresh", json!({"source": "catalog"})).await;
        run_all(&r, &["cache_refresh"]).await;
        assert_eq!(status_of(&db.pool, job).await, "done");
        assert!(
            output(&db, job).await["refused"]
                .as_str()
                .is_some_and(|s| s.contains("answered 401")),
            "{}",
            output(&db, job).await
        );
    }
    let told = notes().await;
    assert_eq!(told.len(), 1, "{told:?}");
    let (severity, title, body, n, read_by) = &told[0];
    assert_eq!(
        (severity.as_str(), *n, read_by.as_deref()),
        ("warning", 2, None)
    );
    assert_eq!(
        title,
        "The catalogue refuses copydesk's requests (HTTP 401)"
    );
    assert!(
        body.contains("no catalog_token is set")
            && body.contains("copydesk settings set catalog_token"),
        "{body}"
    );
    // The token set, the next refresh reads the catalogue and ends the warning.
    store::settings::put(
        &db.pool,
        Some(&Keys::parse(&k).unwrap()),
        None,
        "catalog_token",
        "cat-token-42",
    )
    .await
    .unwrap();
    let job = enqueue(&db, "cache_refresh", json!({"source": "catalog"})).await;
    run_all(&r, &["cache_refresh"]).await;
    assert_eq!(output(&db, job).await["counts"]["inserted"], 1);
    assert_eq!(
        notes().await[0].4.as_deref(),
        Some("copydesk (the catalogue answered again)")
    );
}
