//! The web console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver), against the real server and a real
//! Postgres with the real pipeline behind it: an editor logs in with a token, rejects a
//! draft with notes and sees the rewrite job, approves the next version (its diff shown)
//! and sees the publishing job; a client review link decides once and is refused after
//! use, after expiry and when forged; the queue page shows a failed group and its bulk
//! retry requeues it. Screenshots of the main pages go to
//! `target/tmp/console-screenshots/`. Plain HTTP checks of the console's guards (CSRF,
//! login, another tenant's ids) follow.

mod common;

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use common::*;
use copydesk::{
    app,
    domain::{DEFAULT_TENANT, Platform, TokenRole},
    http::api::ApiState,
    keys::Keys,
    links::LinkKey,
    queue::{self, NewJob},
    store,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

const LINK_KEY: &str = "8f1c2e4a6b8d0f1e3c5a7b9d1f3e5c7a9b1d3f5e7c9a1b3d5f7e9c1a3b5d7f9e";

const STORE: &str = "<html><head><title>Linen &amp; Loom</title></head><body>
<h1>Linen woven slowly</h1>
<p>Our linen is woven in small Lithuanian mills by families who have done it for generations.</p>
<p>Every shirt is cut to last a decade, and we repair what we sell, for free.</p></body></html>";

/// A chromedriver process on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    /// Kills chromedriver and the browser it started (its own process group), so a
    /// failing test leaves no Chromium behind.
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn browser() -> (Driver, Client) {
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let port = free_port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {driver}: {e}. The browser tests need Debian's chromium and \
                 chromium-driver (.ci/run installs them: apt-get install chromium chromium-driver)"
            )
        });
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        port,
        _profile: profile,
    };
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1100",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        },
    });
    let mut last = None;
    for _ in 0..100 {
        let builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await;
        match builder {
            Ok(c) => return (driver, c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start a session: {last:?}");
}

/// Where the screenshots go (under target/).
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!(
            "no {css} on {}: {e}\n{}",
            c.current_url().await.unwrap(),
            c.find(Locator::Css("body"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        ),
    }
}

/// Waits until the browser is at `path` (a form's answer has loaded).
async fn wait_path(c: &Client, path: &str) {
    for _ in 0..100 {
        if c.current_url().await.unwrap().path() == path {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "never reached {path}; at {}",
        c.current_url().await.unwrap()
    );
}

async fn page_text(c: &Client) -> String {
    text_of(c, "body").await
}

/// The console server over `db` on an ephemeral port.
async fn serve(db: &TestDb, keys: Arc<Keys>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = fast_settings();
    settings.http.public_url = format!("http://{addr}");
    let state = ApiState::new(db.pool.clone(), Arc::new(settings), catalog(), Ok(keys))
        .with_link_key(LinkKey::parse(LINK_KEY).unwrap());
    tokio::spawn(async move { axum::serve(listener, copydesk::http::app(state)).await });
    addr
}

async fn site() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STORE, "text/html"))
        .mount(&server)
        .await;
    server
}

const STEPS: [&str; 3] = ["brand_voice_analysis", "draft_generation", "evaluation"];

/// A project whose `channel` draft waits for approval (the real steps, offline model).
async fn to_approval(
    db: &TestDb,
    r: &copydesk::queue::Runner<copydesk::jobs::App>,
    site: &MockServer,
    name: &str,
    channel: &str,
) -> (Uuid, Uuid) {
    let p: Uuid = sqlx::query_scalar("INSERT INTO projects (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let input = json!({"store_url": site.uri(), "pipeline": {"channels": [channel]}});
    queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("brand_voice_analysis", input).project(p),
    )
    .await
    .unwrap();
    while queue::runner::run_once(r, &STEPS).await.unwrap().is_some() {}
    (p, pending_of(db, p).await)
}

async fn pending_of(db: &TestDb, project: Uuid) -> Uuid {
    sqlx::query_scalar(
        "SELECT a.id FROM approvals a JOIN artifacts d ON d.id = a.artifact_id
         WHERE a.status = 'pending' AND d.project_id = $1",
    )
    .bind(project)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn token(db: &TestDb, tenant: Uuid, name: &str, role: TokenRole) -> String {
    let mut tx = db.pool.begin().await.unwrap();
    let (_, secret) = store::tokens::create(&mut tx, tenant, name, role, None, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    secret.expose().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editors_and_clients_decide_in_a_real_browser() {
    let db = test_db().await;
    let site = site().await;
    let mut settings = fast_settings();
    settings.pipeline.approve_brand_voice = false;
    let mut services = services(settings.clone());
    let keys = Arc::new(Keys::parse(&Keys::generate()).unwrap());
    services.keys = Ok(keys.clone());
    let r = app::runner(db.pool.clone(), app::registry(), services);
    let platforms = copydesk::demo::platforms::FakePlatforms::start()
        .await
        .unwrap();
    let (project, first) = to_approval(&db, &r, &site, "Linen & Loom", "x").await;
    let (creds, meta) = platforms.integration(Platform::X);
    copydesk::publish::integrations::connect(
        &db.pool,
        &keys,
        project,
        Platform::X,
        &creds,
        &meta,
        "test",
    )
    .await
    .unwrap();
    let editor = token(&db, DEFAULT_TENANT, "ed", TokenRole::Operator).await;
    let addr = serve(&db, keys).await;
    let base = format!("http://{addr}");
    let (_driver, c) = browser().await;

    // Logging in: any console page sends a stranger to the login form first.
    c.goto(&format!("{base}/console/approvals")).await.unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/login")
    );
    shot(&c, "01-login").await;
    let form = c.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("token", "cdk_wrong_token").await.unwrap();
    form.submit().await.unwrap();
    assert!(
        text_of(&c, ".problem")
            .await
            .contains("unknown, revoked or expired")
    );
    let form = c.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("token", &editor).await.unwrap();
    form.submit().await.unwrap();
    wait_path(&c, "/console/approvals").await; // back where the login started
    assert!(
        !c.source().await.unwrap().contains(&editor),
        "the token is never in a page"
    );
    let pending = text_of(&c, "#pending").await;
    assert!(
        pending.contains("Linen & Loom") && pending.contains("X"),
        "{pending}"
    );
    shot(&c, "02-inbox").await;

    // The pending draft as X shows it; reject it with notes.
    c.find(Locator::Css("#pending a.button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, &format!("/console/approvals/{first}")).await;
    let length = text_of(&c, "article.post .count").await;
    assert!(length.contains("/ 280 weighted characters"), "{length}");
    assert!(page_text(&c).await.contains("Evaluation of version"));
    shot(&c, "03-approval").await;
    let form = c.form(Locator::Css("#decide form")).await.unwrap();
    form.set_by_name("notes", "Mention the free repairs.")
        .await
        .unwrap();
    form.submit_with(Locator::Css("button.reject"))
        .await
        .unwrap();
    assert!(text_of(&c, ".notice").await.contains("Rejected"));
    let (status, by, notes): (String, String, String) =
        sqlx::query_as("SELECT status, decided_by, notes FROM approvals WHERE id = $1")
            .bind(first)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), by.as_str(), notes.as_str()),
        ("rejected", "ed", "Mention the free repairs.")
    );

    // A worker applies the decision: the rewrite job appears in the jobs listing.
    let applied =
        copydesk::pipeline::decisions::apply_decided(&db.pool, r.catalog(), &settings, 10)
            .await
            .unwrap();
    assert_eq!(applied.len(), 1);
    c.goto(&format!(
        "{base}/console/jobs?status=queued&kind=draft_generation"
    ))
    .await
    .unwrap();
    let jobs = text_of(&c, "#jobs").await;
    assert!(
        jobs.contains("draft_generation") && jobs.contains("queued"),
        "{jobs}"
    );
    shot(&c, "04-rewrite-queued").await;

    // The rewrite and its evaluation run; version 2 waits, with the diff against v1.
    while queue::runner::run_once(&r, &STEPS).await.unwrap().is_some() {}
    let second = pending_of(&db, project).await;
    c.goto(&format!("{base}/console/approvals/{second}"))
        .await
        .unwrap();
    let changes = text_of(&c, "section.changes").await;
    assert!(changes.contains("Changes from version"), "{changes}");
    assert!(
        !c.find_all(Locator::Css("section.changes ins"))
            .await
            .unwrap()
            .is_empty()
            || !c
                .find_all(Locator::Css("section.changes del"))
                .await
                .unwrap()
                .is_empty(),
        "the diff marks what changed: {changes}"
    );
    let history = text_of(&c, "section.history").await;
    assert!(
        history.contains("v1") && history.contains("v2") && history.contains("rejected"),
        "{history}"
    );
    shot(&c, "05-approval-diff").await;
    let form = c.form(Locator::Css("#decide form")).await.unwrap();
    form.submit_with(Locator::Css("button.approve"))
        .await
        .unwrap();
    assert!(text_of(&c, ".notice").await.contains("Approved"));
    copydesk::pipeline::decisions::apply_decided(&db.pool, r.catalog(), &settings, 10)
        .await
        .unwrap();
    c.goto(&format!("{base}/console/jobs?kind=publishing"))
        .await
        .unwrap();
    let jobs = text_of(&c, "#jobs").await;
    assert!(
        jobs.contains("publishing") && jobs.contains("queued"),
        "{jobs}"
    );
    c.goto(&format!("{base}/console/projects/{project}"))
        .await
        .unwrap();
    assert!(page_text(&c).await.contains("X"));
    shot(&c, "06-project").await;

    // A client review link, made on the approval page, decides once.
    let (_, third) = to_approval(&db, &r, &site, "Second store", "linkedin").await;
    c.goto(&format!("{base}/console/approvals/{third}"))
        .await
        .unwrap();
    let form = c.form(Locator::Css("section.links form")).await.unwrap();
    form.set_by_name("name", "Acme marketing").await.unwrap();
    form.submit().await.unwrap();
    text_of(&c, "section.newlink").await;
    let url = c
        .find(Locator::Css("input.url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(
        url.starts_with("http://") && url.contains("/review/"),
        "{url}"
    );
    // Another link to the same approval, which will have expired.
    let stale = copydesk::pipeline::review_links::create_in(
        &mut db.pool.acquire().await.unwrap(),
        third,
        "Late reviewer",
        "test",
        chrono::Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    sqlx::query("UPDATE review_links SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(stale.id)
        .execute(&db.pool)
        .await
        .unwrap();
    // The client has no session.
    c.delete_all_cookies().await.unwrap();
    c.goto(&url).await.unwrap();
    assert!(
        text_of(&c, "article.post .count")
            .await
            .contains("/ 3000 characters")
    );
    shot(&c, "07-review-link").await;
    let form = c.form(Locator::Css("#decide form")).await.unwrap();
    form.set_by_name("notes", "Lovely.").await.unwrap();
    form.submit_with(Locator::Css("button.approve"))
        .await
        .unwrap();
    assert!(
        text_of(&c, ".notice")
            .await
            .contains("You approved the draft")
    );
    let (status, by): (String, String) =
        sqlx::query_as("SELECT status, decided_by FROM approvals WHERE id = $1")
            .bind(third)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), by.as_str()),
        ("approved", "Acme marketing (review link)")
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE actor = 'Acme marketing (review link)'
               AND action IN ('approval.approved', 'review_link.used')"
        )
        .await,
        2
    );
    // Used: refused.
    c.goto(&url).await.unwrap();
    let used = page_text(&c).await;
    assert!(
        used.contains("this link was used") && !used.contains("Your decision"),
        "{used}"
    );
    // Expired: refused.
    let key = LinkKey::parse(LINK_KEY).unwrap();
    c.goto(&copydesk::links::url(&base, &key.sign(stale.id)))
        .await
        .unwrap();
    assert!(page_text(&c).await.contains("this link expired"));
    // Forged (another id under the same signature): refused without a row read.
    let forged = format!("{}.{}", Uuid::now_v7(), url.rsplit_once('.').unwrap().1);
    c.goto(&format!("{base}/review/{forged}")).await.unwrap();
    assert!(page_text(&c).await.contains("not valid"));
    shot(&c, "08-review-link-refused").await;
    // The link reaches nothing else.
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/login")
    );

    // The queue: a group of failures, retried in bulk.
    for n in [17, 18] {
        sqlx::query(
            "INSERT INTO jobs (kind, input, status, attempts, last_error, finished_at)
             VALUES ('noop', '{}', 'failed', 5, $1, now())",
        )
        .bind(format!("upstream timed out after 30 s (call {n})"))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let form = {
        c.goto(&format!("{base}/console/login")).await.unwrap();
        c.form(Locator::Css("form.card")).await.unwrap()
    };
    form.set_by_name("token", &editor).await.unwrap();
    form.submit().await.unwrap();
    wait_path(&c, "/console/approvals").await;
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    let group = text_of(&c, "section.group").await;
    assert!(
        group.contains("upstream timed out after <n> s (call <n>)") && group.contains("2 job(s)"),
        "{group}"
    );
    assert!(page_text(&c).await.contains("Done and failed per minute"));
    c.find(Locator::Css("svg rect.failed")).await.unwrap();
    shot(&c, "09-queue").await;
    c.form(Locator::Css("section.group form"))
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    assert!(text_of(&c, ".notice").await.contains("queued again"));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE kind = 'noop' AND status = 'queued' AND attempts = 0"
        )
        .await,
        2
    );
    let retried: Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'noop' LIMIT 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    c.goto(&format!("{base}/console/jobs/{retried}"))
        .await
        .unwrap();
    assert!(text_of(&c, "ol.timeline").await.contains("enqueued"));
    shot(&c, "10-job").await;
    c.goto(&format!("{base}/console/integrations"))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    assert!(
        page.contains("x") && !page.contains("x-fake-access"),
        "no credential in a page"
    );
    shot(&c, "11-integrations").await;

    // The approvals above told the tenant: one notification per approval, readable.
    c.goto(&format!("{base}/console/notifications?all=1"))
        .await
        .unwrap();
    let text = page_text(&c).await;
    assert!(text.contains("waits for approval"), "{text}");
    shot(&c, "12-notifications").await;
    c.close().await.unwrap();
}

/// One plain HTTP answer of the console: status, headers, body.
async fn http(
    router: &axum::Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, axum::http::HeaderMap, String) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let body = match form {
        Some(f) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            axum::body::Body::from(f.to_owned())
        }
        None => axum::body::Body::empty(),
    };
    let res = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_forged_forms_other_tenants_ids_and_lesser_roles() {
    let db = test_db().await;
    let keys = Arc::new(Keys::parse(&Keys::generate()).unwrap());
    let mut settings = fast_settings();
    settings.http.public_url = "https://copydesk.example".into();
    let router = copydesk::http::app(
        ApiState::new(db.pool.clone(), Arc::new(settings), catalog(), Ok(keys))
            .with_link_key(LinkKey::parse(LINK_KEY).unwrap()),
    );
    // A failed job of the default tenant and another tenant with a token.
    let failed: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, status, attempts, last_error, finished_at)
         VALUES ('noop', '{}', 'failed', 5, 'boom', now()) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let operator = token(&db, DEFAULT_TENANT, "ops", TokenRole::Operator).await;
    let viewer = token(&db, DEFAULT_TENANT, "look", TokenRole::Viewer).await;
    let globex = {
        let mut tx = db.pool.begin().await.unwrap();
        let t = store::tenants::create(&mut tx, "globex", "Globex", "test")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        token(&db, t.id, "globex-admin", TokenRole::Admin).await
    };

    // Login: the form's double-submit value must match its cookie; the session cookie
    // is HttpOnly, SameSite=Strict and (over https) Secure, and holds no other field.
    let (status, headers, _) = http(&router, "GET", "/console/login", None, None).await;
    assert_eq!(status, 200);
    let nonce_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(nonce_cookie.contains("HttpOnly") && nonce_cookie.contains("SameSite=Strict"));
    let nonce = nonce_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let form = format!("token={operator}&nonce=forged&next=%2Fconsole%2Fqueue");
    let (status, _, _) = http(
        &router,
        "POST",
        "/console/login",
        Some(&format!("copydesk_login={nonce}")),
        Some(&form),
    )
    .await;
    assert_eq!(status, 403, "a login form from elsewhere");
    let form = format!("token={operator}&nonce={nonce}&next=https%3A%2F%2Fevil.example%2F");
    let (status, headers, _) = http(
        &router,
        "POST",
        "/console/login",
        Some(&format!("copydesk_login={nonce}")),
        Some(&form),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(
        headers["location"], "/console/approvals",
        "no redirect off the console"
    );
    let session = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("copydesk_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(session.contains(attr), "{attr} missing: {session}");
    }
    let ops = format!("copydesk_session={operator}");

    // A form without the session's CSRF field changes nothing.
    let (status, _, body) = http(
        &router,
        "POST",
        &format!("/console/jobs/{failed}/retry"),
        Some(&ops),
        Some("csrf=guess"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"));
    assert_eq!(status_of(&db.pool, failed).await, "failed");
    // With it, the retry happens, audited with the token's name.
    let (_, _, page) = http(
        &router,
        "GET",
        &format!("/console/jobs/{failed}"),
        Some(&ops),
        None,
    )
    .await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert!(!page.contains(&operator), "the token is never in a page");
    let (status, _, _) = http(
        &router,
        "POST",
        &format!("/console/jobs/{failed}/retry"),
        Some(&ops),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(status_of(&db.pool, failed).await, "queued");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE actor = 'ops' AND action = 'job.retried'"
        )
        .await,
        1
    );

    // A viewer sees the job but has no buttons, and a forged POST is refused by role.
    let look = format!("copydesk_session={viewer}");
    let (status, _, page) = http(
        &router,
        "GET",
        &format!("/console/jobs/{failed}"),
        Some(&look),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!page.contains("/cancel\""), "no cancel button for a viewer");
    let viewer_csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let (status, _, _) = http(
        &router,
        "POST",
        &format!("/console/jobs/{failed}/cancel"),
        Some(&look),
        Some(&format!("csrf={viewer_csrf}")),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(status_of(&db.pool, failed).await, "queued");

    // Another tenant's admin: the job is not found, its listings are empty.
    let other = format!("copydesk_session={globex}");
    let (status, _, _) = http(
        &router,
        "GET",
        &format!("/console/jobs/{failed}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, _, page) = http(&router, "GET", "/console/jobs", Some(&other), None).await;
    assert!(page.contains("No job matches") && !page.contains(&failed.to_string()[..8]));

    // A revoked token ends the session at once.
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE name = 'ops'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, headers, _) = http(&router, "GET", "/console/queue", Some(&ops), None).await;
    assert_eq!(status, 303);
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/login")
    );
    // Every page forbids framing, scripts and referrers.
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

/// The console over `db`, and a second tenant, Globex, whose rows no page of the
/// default tenant's may show.
async fn console_with_globex(db: &TestDb, keys: Arc<Keys>) -> (axum::Router, Uuid) {
    let router = copydesk::http::app(
        ApiState::new(
            db.pool.clone(),
            Arc::new(fast_settings()),
            catalog(),
            Ok(keys),
        )
        .with_link_key(LinkKey::parse(LINK_KEY).unwrap()),
    );
    let mut tx = db.pool.begin().await.unwrap();
    let globex = store::tenants::create(&mut tx, "globex", "Globex", "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (router, globex.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifications_page_shows_the_tenants_own_and_marks_them_read() {
    use copydesk::{domain::Severity, store::notifications::New};
    let db = test_db().await;
    let keys = Arc::new(Keys::parse(&Keys::generate()).unwrap());
    let (router, globex) = console_with_globex(&db, keys).await;
    let raise = |tenant: Uuid, title: &'static str| {
        let pool = db.pool.clone();
        async move {
            store::notifications::raise(
                &pool,
                &New {
                    tenant,
                    project: None,
                    job: None,
                    severity: Severity::Error,
                    kind: "job_failed",
                    cause: title,
                    title,
                    body: "the store is gone",
                    data: json!({}),
                },
            )
            .await
            .unwrap()
        }
    };
    let ours = raise(DEFAULT_TENANT, "A noop job failed for good").await;
    let theirs = raise(globex, "Globex's own trouble").await;
    store::notifications::add_webhook(
        &db.pool,
        &store::notifications::NewWebhook {
            tenant: DEFAULT_TENANT,
            project: None,
            shown: "https://hooks.example.com/…",
            url: b"sealed",
            secret: b"sealed",
            min_severity: Severity::Warning,
        },
        "test",
    )
    .await
    .unwrap();
    let ana = format!(
        "copydesk_session={}",
        token(&db, DEFAULT_TENANT, "ana", TokenRole::Viewer).await
    );

    let (status, _, page) = http(&router, "GET", "/console/notifications", Some(&ana), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("A noop job failed for good"), "{page}");
    assert!(page.contains("the store is gone"));
    assert!(
        !page.contains("Globex"),
        "another tenant's notification is not shown"
    );
    assert!(page.contains("https://hooks.example.com/…"));
    assert!(page.contains("warning and above"));
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let read_by = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT read_by FROM notifications WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // A forged form, and another tenant's id, change nothing.
    let (status, _, _) = http(
        &router,
        "POST",
        &format!("/console/notifications/{ours}/read"),
        Some(&ana),
        Some("csrf=guess"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = http(
        &router,
        "POST",
        &format!("/console/notifications/{theirs}/read"),
        Some(&ana),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(read_by(theirs).await, None);
    assert_eq!(read_by(ours).await, None);
    let (status, headers, _) = http(
        &router,
        "POST",
        &format!("/console/notifications/{ours}/read"),
        Some(&ana),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/console/notifications?done=read");
    assert_eq!(read_by(ours).await.as_deref(), Some("ana"));
    let (_, _, page) = http(
        &router,
        "GET",
        "/console/notifications?done=read",
        Some(&ana),
        None,
    )
    .await;
    assert!(
        page.contains("Marked read.") && page.contains("Nothing unread."),
        "{page}"
    );
    let (_, _, page) = http(
        &router,
        "GET",
        "/console/notifications?all=1",
        Some(&ana),
        None,
    )
    .await;
    assert!(
        page.contains("A noop job failed for good") && page.contains(">ana<"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_page_lists_the_tenants_subscriptions_and_their_deliveries_only() {
    let db = test_db().await;
    let keys = Arc::new(Keys::parse(&Keys::generate()).unwrap());
    let (router, globex) = console_with_globex(&db, keys.clone()).await;
    let subscribe = |tenant: Uuid, target: &'static str, events: Vec<String>| {
        let (pool, keys) = (db.pool.clone(), keys.clone());
        async move {
            store::events::subscribe(
                &pool,
                &store::events::NewSubscription {
                    tenant,
                    project: None,
                    target,
                    url: &keys.encrypt(format!("{target}hooks/secret-path").as_bytes()),
                    secret: &keys.encrypt(b"whsec_c2VjcmV0"),
                    events: &events,
                    by: "ops",
                },
            )
            .await
            .unwrap()
        }
    };
    subscribe(
        DEFAULT_TENANT,
        "https://orders.example/",
        vec!["publication.made".into()],
    )
    .await;
    subscribe(globex, "https://globex.example/", vec![]).await;
    // A pending approval raises approval.waiting for… nobody of ours takes that type:
    // no event. A publication does, once delivered.
    let project: Uuid =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('Linen') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO artifacts (project_id, kind, channel, content, data)
         VALUES ($1, 'publication', 'x', 'https://x.example/1', '{\"url\": \"https://x.example/1\"}')",
    )
    .bind(project)
    .execute(&db.pool)
    .await
    .unwrap();
    let delivery: Uuid = sqlx::query_scalar("SELECT id FROM event_deliveries")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    store::notifications::record_attempt_in(
        &db.pool,
        store::notifications::Deliveries::Events,
        delivery,
        Some(503),
        "busy, try later",
        false,
    )
    .await
    .unwrap();
    let ana = format!(
        "copydesk_session={}",
        token(&db, DEFAULT_TENANT, "ana", TokenRole::Viewer).await
    );
    let (status, _, page) = http(&router, "GET", "/console/events", Some(&ana), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("https://orders.example/"), "{page}");
    assert!(page.contains("publication.made"), "{page}");
    assert!(
        page.contains("busy, try later") && page.contains("503"),
        "{page}"
    );
    assert!(
        !page.contains("globex.example"),
        "another tenant's subscription is shown"
    );
    assert!(
        !page.contains("secret-path") && !page.contains("whsec_"),
        "{page}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM event_deliveries").await,
        1,
        "one delivery: ours took publication.made, Globex's saw nothing of ours"
    );
    let (status, _, _) = http(&router, "GET", "/console/events", None, None).await;
    assert_ne!(status, 200, "the page needs a session");
}
