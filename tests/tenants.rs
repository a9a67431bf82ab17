//! Tenants against a real Postgres with real roles: what a tenant's own database
//! session can see and change, whatever SQL it sends; what the API role can do outside
//! a request; jobs a tenant enqueues with plain SQL run in its tenant; caches never
//! cross tenants; tokens are hashes; every CLI action leaves an audit row, and the
//! audit table refuses to be rewritten.

mod common;

use std::{io::Write, process::Stdio};

use common::*;
use copydesk::db::Db;
use copydesk::{
    app,
    domain::{DEFAULT_TENANT, Platform, TokenRole},
    keys::Keys,
    pipeline::decisions,
    queue::{self, JobStatus, NewJob},
    store::{self, caches::CatalogItem},
};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

/// Every table that holds a tenant's rows.
const TENANT_TABLES: &[&str] = &[
    "projects",
    "artifacts",
    "jobs",
    "approvals",
    "notifications",
    "runs",
    "integrations",
    "publish_attempts",
    "brand_voice_cache",
    "catalog_items",
    "llm_reservations",
    "api_tokens",
    "audit_log",
];

struct Tenant {
    id: Uuid,
    role: String,
}

/// A tenant with a LOGIN role of its own (role names are cluster-wide: each test's
/// are unique).
async fn tenant(db: &TestDb, slug: &str) -> Tenant {
    let role = format!("{slug}_{}", &Uuid::new_v4().simple().to_string()[..10]);
    let mut tx = db.pool.begin().await.unwrap();
    let t = store::tenants::create(&mut tx, slug, &format!("{slug} Ltd"), "test")
        .await
        .unwrap();
    store::tenants::create_login_role(&mut tx, &role, "a password")
        .await
        .unwrap();
    store::tenants::grant_role(&mut tx, t.id, &role, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Tenant { id: t.id, role }
}

/// A plain session as `role`, like psql's.
async fn session(db: &TestDb, role: &str) -> PgConnection {
    PgConnection::connect_with(&cluster().connect_options(&db.name).username(role))
        .await
        .unwrap()
}

/// The ids of one tenant's rows, one or more in every tenant table.
#[derive(Debug, Clone, Copy)]
struct Seeded {
    project: Uuid,
    job: Uuid,
    draft: Uuid,
    approval: Uuid,
}

/// Writes a row into every tenant table for `t`, as the owner (the workers' role).
async fn seed(db: &TestDb, t: &Tenant, url: &str) -> Seeded {
    let pool = &db.pool;
    let project = store::projects::create(pool, Some(t.id), "brand", Some(url))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let job = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({})).project(project),
    )
    .await
    .unwrap()
    .id;
    let draft: Uuid = sqlx::query_scalar(
        "INSERT INTO artifacts (project_id, job_id, kind, channel, content)
         VALUES ($1, $2, 'draft', 'blog', 'Our linen lasts.') RETURNING id",
    )
    .bind(project)
    .bind(job)
    .fetch_one(pool)
    .await
    .unwrap();
    let approval = store::approvals::create_pending(pool, job, draft)
        .await
        .unwrap();
    let mut run = store::runs::NewRun::call("writer", "offline", "m");
    run.job_id = Some(job);
    run.project_id = Some(project);
    store::runs::record(pool, &run).await.unwrap();
    let integration =
        store::integrations::upsert(pool, project, Platform::Wordpress, b"sealed", &json!({}))
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO publish_attempts (job_id, attempt, artifact_id, integration_id, platform, lookup_key)
         VALUES ($1, 1, $2, $3, 'wordpress', 'k')",
    )
    .bind(job)
    .bind(draft)
    .bind(integration)
    .execute(pool)
    .await
    .unwrap();
    store::caches::put_brand_voice(pool, t.id, url, &json!({"tone": ["warm"]}), draft)
        .await
        .unwrap();
    let item = CatalogItem {
        external_id: "sku-1".into(),
        name: "Shirt".into(),
        designer: None,
        description: None,
        price: Some(90.0),
        image_url: None,
        category: None,
        tags: vec![],
        raw: json!({"id": "sku-1"}),
    };
    store::caches::catalog_upsert(pool, t.id, &[&item], 24)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO llm_reservations (project_id, job_id, amount_usd, expires_at)
         VALUES ($1, $2, 0.01, now() + interval '1 hour')",
    )
    .bind(project)
    .bind(job)
    .execute(pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    store::tokens::create(&mut tx, t.id, "ana", TokenRole::Approver, None, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Seeded {
        project,
        job,
        draft,
        approval,
    }
}

/// `(own rows, other tenants' rows)` of every tenant table, as `conn` sees them.
async fn visible(conn: &mut PgConnection, own: Uuid) -> Vec<(&'static str, i64, i64)> {
    let mut out = Vec::new();
    for t in TENANT_TABLES {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id <> $1) FROM {t}"
        )))
        .bind(own)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("reading {t}: {e}"));
        out.push((*t, row.get::<i64, _>(0), row.get::<i64, _>(1)));
    }
    out
}

fn assert_only_own(seen: &[(&str, i64, i64)], who: &str) {
    for (table, own, other) in seen {
        assert!(*own > 0, "{who} sees none of its own rows in {table}");
        assert_eq!(*other, 0, "{who} sees another tenant's rows in {table}");
    }
}

fn sqlstate(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_role_sees_and_changes_only_its_tenants_rows_whatever_sql_it_sends() {
    let db = test_db().await;
    let (acme, globex) = (tenant(&db, "acme").await, tenant(&db, "globex").await);
    let _a = seed(&db, &acme, "https://shop.example").await;
    let g = seed(&db, &globex, "https://shop.example").await;

    // The owner sees both tenants: the counts below are not empty by accident.
    let mut owner = db.pool.acquire().await.unwrap();
    for (table, own, other) in visible(&mut owner, acme.id).await {
        assert!(own > 0 && other > 0, "{table}: the owner sees every tenant");
    }

    let mut s = session(&db, &acme.role).await;
    assert_only_own(&visible(&mut s, acme.id).await, "acme");

    // Setting the tenant, in any way a session can, changes nothing.
    sqlx::query("SET copydesk.tenant_id = '00000000-0000-0000-0000-000000000001'")
        .execute(&mut s)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('copydesk.tenant_id', $1, false)")
        .bind(globex.id.to_string())
        .execute(&mut s)
        .await
        .unwrap();
    assert_only_own(
        &visible(&mut s, acme.id).await,
        "acme after SET copydesk.tenant_id",
    );
    // Nor can it become the API role, or the owner.
    let e = sqlx::query("SET ROLE copydesk_api")
        .execute(&mut s)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");

    // A job for globex's project is refused, however it is spelled.
    for (sql, bind_tenant) in [
        (
            "INSERT INTO jobs (kind, input, project_id) VALUES ('noop', '{}', $1)",
            None,
        ),
        (
            "INSERT INTO jobs (kind, input, project_id, tenant_id) VALUES ('noop', '{}', $1, $2)",
            Some(globex.id),
        ),
        (
            "INSERT INTO jobs (kind, input, project_id, tenant_id) VALUES ('noop', '{}', $1, $2)",
            Some(acme.id),
        ),
    ] {
        let e = sqlx::query(sql)
            .bind(g.project)
            .bind(bind_tenant)
            .execute(&mut s)
            .await
            .unwrap_err();
        assert!(
            ["42501", "23514"].contains(&sqlstate(&e).as_str()),
            "{sql}: {e}"
        );
    }
    // A job naming globex's job as its parent gets globex's tenant, and is refused.
    let e = sqlx::query("INSERT INTO jobs (kind, input, parent_id) VALUES ('noop', '{}', $1)")
        .bind(g.job)
        .execute(&mut s)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // Naming its own tenant does not make another tenant's row its to refer to.
    for (sql, theirs) in [
        (
            "INSERT INTO jobs (kind, input, parent_id, tenant_id) VALUES ('noop', '{}', $1, $2)",
            g.job,
        ),
        (
            "INSERT INTO jobs (kind, input, input_artifact_id, tenant_id) VALUES ('noop', '{}', $1, $2)",
            g.draft,
        ),
        (
            "INSERT INTO artifacts (job_id, kind, content, tenant_id) VALUES ($1, 'draft', 'x', $2)",
            g.job,
        ),
    ] {
        let e = sqlx::query(sql)
            .bind(theirs)
            .bind(acme.id)
            .execute(&mut s)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "23514", "{sql}: {e}");
        assert!(e.to_string().contains("of tenant"), "{e}");
    }

    // Globex's approval cannot be decided, nor its draft read, moved to or deleted.
    let n = sqlx::query(
        "UPDATE approvals SET status = 'approved', decided_by = 'mallory' WHERE id = $1",
    )
    .bind(g.approval)
    .execute(&mut s)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 0);
    let n = sqlx::query("SELECT 1 FROM artifacts WHERE id = $1")
        .bind(g.draft)
        .fetch_all(&mut s)
        .await
        .unwrap()
        .len();
    assert_eq!(n, 0);
    let e = sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(g.job)
        .execute(&mut s)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "no DELETE at all: {e}");
    let approval: String = sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
        .bind(g.approval)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(approval, "pending");

    // Least privilege within its own tenant.
    for (sql, what) in [
        (
            "UPDATE jobs SET locked_by = 'me', locked_until = now(), attempts = 0",
            "a job's lease",
        ),
        ("UPDATE jobs SET status = 'done'", "a job's status"),
        ("SELECT credentials FROM integrations", "credentials"),
        ("SELECT secret FROM app_settings", "secret settings"),
        ("SELECT secret_sha256 FROM api_tokens", "token hashes"),
        (
            "INSERT INTO audit_log (actor, action) VALUES ('me', 'forged')",
            "the audit log",
        ),
        (
            "INSERT INTO runs (provider, status) VALUES ('x', 'ok')",
            "runs",
        ),
        (
            "INSERT INTO jobs (kind, input, status) VALUES ('noop', '{}', 'done')",
            "a job's status",
        ),
        (
            "INSERT INTO tenant_roles (role_name, tenant_id) VALUES ('x', gen_random_uuid())",
            "role mappings",
        ),
    ] {
        let e = sqlx::query(sql).execute(&mut s).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{what} must be out of reach: {e}");
    }
    // What it may do: enqueue for its own project, decide its own approvals.
    let a_project: Uuid = sqlx::query_scalar("SELECT id FROM projects")
        .fetch_one(&mut s)
        .await
        .unwrap();
    let own_job: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, project_id) VALUES ('noop', '{}', $1) RETURNING id",
    )
    .bind(a_project)
    .fetch_one(&mut s)
    .await
    .unwrap();
    let t: Uuid = sqlx::query_scalar("SELECT tenant_id FROM jobs WHERE id = $1")
        .bind(own_job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(t, acme.id);
    let n = sqlx::query("UPDATE approvals SET status = 'approved', decided_by = 'ana'")
        .execute(&mut s)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1, "acme's one approval");
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_role_sees_nothing_outside_a_request_and_one_tenant_inside() {
    let db = test_db().await;
    let (acme, globex) = (tenant(&db, "acme").await, tenant(&db, "globex").await);
    seed(&db, &acme, "https://a.example").await;
    seed(&db, &globex, "https://g.example").await;

    // A request's transaction: the owner switches to the API role and the token's
    // tenant, both local to the transaction.
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE copydesk_api")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('copydesk.tenant_id', $1, true)")
        .bind(acme.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_only_own(&visible(&mut tx, acme.id).await, "the API role for acme");
    tx.commit().await.unwrap();
    // After it, the connection is the owner again.
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_ne!(user, "copydesk_api");

    // Without a tenant the API role sees no row and can write none.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE copydesk_api")
        .execute(&mut *tx)
        .await
        .unwrap();
    for (table, own, other) in visible(&mut tx, acme.id).await {
        assert_eq!((own, other), (0, 0), "{table} without a tenant");
    }
    let e = sqlx::query("INSERT INTO jobs (kind, input) VALUES ('noop', '{}')")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(["42501", "23502"].contains(&sqlstate(&e).as_str()), "{e}");
    tx.rollback().await.unwrap();
}

/// A store page on loopback; `hits` page fetches expected.
async fn store_page(hits: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<html><head><title>Linen</title></head><body><h1>Linen woven slowly</h1>\
             <p>Every shirt is cut to last a decade, and we repair what we sell.</p></body></html>",
            "text/html",
        ))
        .expect(hits)
        .mount(&server)
        .await;
    server
}

/// Runs every ready job of the pipeline's kinds, one at a time, applying decisions as
/// a worker would, until nothing is left to do.
async fn drain(db: &TestDb, r: &queue::Runner<copydesk::jobs::App>) {
    let kinds = [
        "brand_voice_analysis",
        "draft_generation",
        "evaluation",
        "publishing",
        "noop",
    ];
    loop {
        let ran = queue::runner::run_once(r, &kinds).await.unwrap().is_some();
        let applied = decisions::apply_decided(&db.pool, r.catalog(), &r.app.settings, 50)
            .await
            .unwrap();
        if !ran && applied.is_empty() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_tenant_enqueues_with_plain_sql_runs_and_writes_in_its_tenant() {
    let db = test_db().await;
    let (acme, globex) = (tenant(&db, "acme").await, tenant(&db, "globex").await);
    let site = store_page(1).await;
    let r = runner(&db, fast_settings(), app::registry());

    // Acme's service, with its own role and nothing but SQL.
    let mut s = session(&db, &acme.role).await;
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (name, store_url) VALUES ('Linen', $1) RETURNING id",
    )
    .bind(site.uri())
    .fetch_one(&mut s)
    .await
    .unwrap();
    let input = json!({"store_url": site.uri(), "pipeline": {"channels": ["blog", "x"]}});
    let job: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, project_id) VALUES ('brand_voice_analysis', $1, $2) RETURNING id",
    )
    .bind(&input)
    .bind(project)
    .fetch_one(&mut s)
    .await
    .unwrap();
    drain(&db, &r).await;
    assert_eq!(status_of(&db.pool, job).await, "needs_approval");
    // Acme decides in SQL too; the worker applies it and writes the drafts.
    let n = sqlx::query(
        "UPDATE approvals SET status = 'approved', decided_by = 'ana' WHERE status = 'pending'",
    )
    .execute(&mut s)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
    drain(&db, &r).await;

    let per_tenant = |table: &'static str| {
        let pool: Db = db.pool.clone();
        async move {
            sqlx::query_as::<_, (Uuid, i64)>(sqlx::AssertSqlSafe(format!(
                "SELECT tenant_id, count(*) FROM {table} GROUP BY tenant_id"
            )))
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let jobs = per_tenant("jobs").await;
    assert_eq!(
        jobs.len(),
        1,
        "every job, follow-ups included, is acme's: {jobs:?}"
    );
    assert_eq!(jobs[0].0, acme.id);
    assert!(
        jobs[0].1 >= 5,
        "brand voice, two drafts, two evaluations: {jobs:?}"
    );
    for table in ["artifacts", "runs", "approvals", "brand_voice_cache"] {
        let rows = per_tenant(table).await;
        assert_eq!(rows.len(), 1, "{table}: {rows:?}");
        assert_eq!(rows[0].0, acme.id, "{table} is acme's");
    }
    let drafts_waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM approvals a JOIN artifacts d ON d.id = a.artifact_id
         WHERE a.status = 'pending' AND d.kind = 'draft'",
    )
    .fetch_one(&mut s)
    .await
    .unwrap();
    assert_eq!(drafts_waiting, 2, "acme sees its two drafts waiting");

    // Globex's session sees none of it.
    let mut g = session(&db, &globex.role).await;
    let seen: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM artifacts) + (SELECT count(*) FROM runs)",
    )
    .fetch_one(&mut g)
    .await
    .unwrap();
    assert_eq!(seen, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_store_url_in_two_tenants_makes_two_analyses() {
    let db = test_db().await;
    let (acme, globex) = (tenant(&db, "acme").await, tenant(&db, "globex").await);
    let site = store_page(2).await; // one fetch per tenant, none for acme's second project
    let r = runner(&db, fast_settings(), app::registry());
    let mut conn = db.pool.acquire().await.unwrap();
    for t in [&acme, &globex, &acme] {
        let p = store::projects::create(&db.pool, Some(t.id), "shop", Some(&site.uri()))
            .await
            .unwrap();
        queue::enqueue(
            &mut conn,
            &catalog(),
            &NewJob::new("brand_voice_analysis", json!({"store_url": site.uri()})).project(p),
        )
        .await
        .unwrap();
        let (_, written) = queue::runner::run_once(&r, &["brand_voice_analysis"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            written,
            queue::runner::Written::Status(JobStatus::NeedsApproval)
        );
    }
    let analyses: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT tenant_id, (data->>'from_cache')::bool FROM artifacts
         WHERE kind = 'brand_voice' ORDER BY created_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        analyses,
        vec![(acme.id, false), (globex.id, false), (acme.id, true)],
        "globex analyses afresh; acme's second project reuses acme's cache"
    );
    let calls: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, count(*) FROM runs WHERE agent = 'brand-voice-analyzer'
         GROUP BY tenant_id ORDER BY count(*)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(calls.len(), 2, "one model call per tenant: {calls:?}");
    assert!(calls.iter().all(|(_, n)| *n == 1), "{calls:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM brand_voice_cache").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_naming_another_tenants_rows_fails_alone_and_says_why() {
    let db = test_db().await;
    let (acme, globex) = (tenant(&db, "acme").await, tenant(&db, "globex").await);
    let a = seed(&db, &acme, "https://a.example").await;
    let g = seed(&db, &globex, "https://g.example").await;
    let r = runner(&db, fast_settings(), app::registry());
    // Globex's draft approved, so only the tenant stands in the way.
    sqlx::query("UPDATE approvals SET status = 'approved', decided_by = 'g' WHERE id = $1")
        .bind(g.approval)
        .execute(&db.pool)
        .await
        .unwrap();
    // Acme's session names globex's draft and globex's brand voice by id.
    let mut s = session(&db, &acme.role).await;
    let publish: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, project_id, max_attempts) VALUES ('publishing', $1, $2, 1) RETURNING id",
    )
    .bind(json!({"artifact_id": g.draft}))
    .bind(a.project)
    .fetch_one(&mut s)
    .await
    .unwrap();
    let draft: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, project_id, max_attempts) VALUES ('draft_generation', $1, $2, 1) RETURNING id",
    )
    .bind(json!({"channel": "blog", "brand_voice_artifact_id": g.draft, "based_on": g.draft}))
    .bind(a.project)
    .fetch_one(&mut s)
    .await
    .unwrap();
    drain(&db, &r).await;
    for (job, says) in [
        (publish, "belongs to another tenant"),
        (draft, "no brand voice artifact"),
    ] {
        let (_, error) = attempts_and_error(&db.pool, job).await;
        assert_eq!(status_of(&db.pool, job).await, "failed");
        assert!(
            error.as_deref().unwrap_or_default().contains(says),
            "{error:?}"
        );
    }
    // Nothing of globex's moved; acme's own job still runs.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM artifacts WHERE kind = 'publication'"
        )
        .await,
        0
    );
    assert_eq!(status_of(&db.pool, a.job).await, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_jobs_cannot_be_deleted_and_a_job_refers_only_to_real_tenants() {
    let db = test_db().await;
    // Made by hand: no audit row refers to it.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO tenants (slug, name) VALUES ('brief', 'Brief') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let job = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({})).tenant(id),
    )
    .await
    .unwrap()
    .id;
    let t: Uuid = sqlx::query_scalar("SELECT tenant_id FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(t, id);
    let e = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23503", "{e}");
    assert!(e.to_string().contains("still has jobs"), "{e}");
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(job)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    // The owner's plain INSERT, with no tenant and no reference, lands in `default`;
    // one referring to a project takes the project's tenant, even when it says `default`.
    let acme = tenant(&db, "acme").await;
    let p = store::projects::create(&db.pool, Some(acme.id), "p", None)
        .await
        .unwrap();
    let rows: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, project_id, tenant_id)
         VALUES ('noop', '{}', NULL, DEFAULT), ('noop', '{}', $1, DEFAULT),
                ('noop', '{}', $1, '00000000-0000-0000-0000-000000000001')
         RETURNING tenant_id",
    )
    .bind(p)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![DEFAULT_TENANT, acme.id, acme.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_overrides_of_agents_and_settings_win_over_the_global_rows() {
    let db = test_db().await;
    let acme = tenant(&db, "acme").await;
    sqlx::query(
        "INSERT INTO agent_model_configs (agent_id, agent_label, model_id, temperature, max_tokens, tenant_id)
         SELECT agent_id, agent_label, 'acme-model', temperature, max_tokens, $1
         FROM agent_model_configs WHERE agent_id = 'blog-writer' AND tenant_id IS NULL",
    )
    .bind(acme.id)
    .execute(&db.pool)
    .await
    .unwrap();
    let model = |t: Option<Uuid>| {
        let pool = db.pool.clone();
        async move {
            store::agents::get(&pool, "blog-writer", t)
                .await
                .unwrap()
                .unwrap()
                .model_id
        }
    };
    assert_eq!(model(Some(acme.id)).await, "acme-model");
    let global = model(None).await;
    assert_ne!(global, "acme-model");
    assert_eq!(model(Some(DEFAULT_TENANT)).await, global);

    let keys = Keys::parse(&Keys::generate()).unwrap();
    store::settings::put(&db.pool, Some(&keys), None, "catalog_token", "global-token")
        .await
        .unwrap();
    store::settings::put(
        &db.pool,
        Some(&keys),
        Some(acme.id),
        "catalog_token",
        "acme-token",
    )
    .await
    .unwrap();
    // Setting it again replaces the row instead of adding one.
    store::settings::put(
        &db.pool,
        Some(&keys),
        Some(acme.id),
        "catalog_token",
        "acme-token-2",
    )
    .await
    .unwrap();
    for (t, expect) in [
        (Some(acme.id), "acme-token-2"),
        (Some(DEFAULT_TENANT), "global-token"),
    ] {
        let got = store::settings::secret(&db.pool, &keys, "catalog_token", t)
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(expect));
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM app_settings").await,
        2
    );
    // Acme's session reads the global row and its own, never the secret.
    let mut s = session(&db, &acme.role).await;
    let keys_seen: Vec<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT key, tenant_id FROM app_settings ORDER BY tenant_id NULLS FIRST")
            .fetch_all(&mut s)
            .await
            .unwrap();
    assert_eq!(
        keys_seen,
        vec![
            ("catalog_token".to_owned(), None),
            ("catalog_token".to_owned(), Some(acme.id))
        ]
    );
}

/// Runs the real `copydesk` binary against `db` with `stdin`, as `USER=ops`.
fn cli(db: &TestDb, args: &[&str], stdin: Option<&str>, keys: &str) -> (bool, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .env("USER", "ops")
        .env("COPYDESK_FERNET_KEYS", keys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "the command failed: {}\n{}", r.1, r.2);
    r.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_as_hashes_and_refused_once_expired_or_revoked() {
    let db = test_db().await;
    let key = Keys::generate();
    let role = format!("acme_{}", &Uuid::new_v4().simple().to_string()[..10]);
    let out = ok(cli(
        &db,
        &[
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme",
            "--db-role",
            &role,
        ],
        Some("s3cret-pw\n"),
        &key,
    ));
    assert!(out.contains("tenant acme (Acme) created"), "{out}");
    let has_password: bool = sqlx::query_scalar(
        "SELECT rolcanlogin AND rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1",
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(has_password);

    let out = ok(cli(
        &db,
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--role",
            "approver",
            "--name",
            "ana",
            "--expires",
            "90d",
        ],
        None,
        &key,
    ));
    let secret = out.lines().last().unwrap().trim().to_owned();
    assert!(secret.starts_with("cdk_") && secret.len() > 40, "{out}");
    let json_out = ok(cli(
        &db,
        &[
            "tokens", "create", "--tenant", "acme", "--role", "viewer", "--name", "bot", "--json",
        ],
        None,
        &key,
    ));
    let bot: Value = serde_json::from_str(&json_out).unwrap();
    let bot_secret = bot["secret"].as_str().unwrap().to_owned();

    // Only hashes at rest: no column of any token row holds a secret.
    let rows: Vec<String> = sqlx::query_scalar("SELECT to_jsonb(t)::text FROM api_tokens t")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(
            !r.contains(&secret[4..]) && !r.contains(&bot_secret[4..]),
            "{r}"
        );
    }
    let listing = ok(cli(&db, &["tokens", "list", "--json"], None, &key));
    assert!(!listing.contains(&secret) && !listing.contains(&bot_secret[12..]));
    assert_eq!(
        serde_json::from_str::<Value>(&listing)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The lookup the API uses.
    let found = store::tokens::authenticate(&db.pool, &secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.name.as_str(), found.role),
        ("ana", TokenRole::Approver)
    );
    assert!(found.last_used_at.is_some());
    let mut forged = secret.clone();
    forged.pop();
    forged.push(if secret.ends_with('a') { 'b' } else { 'a' });
    assert!(
        store::tokens::authenticate(&db.pool, &forged)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store::tokens::authenticate(&db.pool, "cdk_nope_nope")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store::tokens::authenticate(&db.pool, "")
            .await
            .unwrap()
            .is_none()
    );

    // Expired: refused.
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'ana'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(
        store::tokens::authenticate(&db.pool, &secret)
            .await
            .unwrap()
            .is_none()
    );
    // Revoked: refused.
    let bot_id = bot["id"].as_str().unwrap();
    assert!(
        store::tokens::authenticate(&db.pool, &bot_secret)
            .await
            .unwrap()
            .is_some()
    );
    ok(cli(&db, &["tokens", "revoke", bot_id], None, &key));
    assert!(
        store::tokens::authenticate(&db.pool, &bot_secret)
            .await
            .unwrap()
            .is_none()
    );

    // Bad input says what is wrong.
    let (good, _, err) = cli(
        &db,
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--role",
            "approver",
            "--name",
            "x",
            "--expires",
            "90y",
        ],
        None,
        &key,
    );
    assert!(!good && err.contains("is not a duration"), "{err}");
    let (good, _, err) = cli(
        &db,
        &[
            "tokens", "create", "--tenant", "nobody", "--role", "viewer", "--name", "x",
        ],
        None,
        &key,
    );
    assert!(!good && err.contains("no tenant \"nobody\""), "{err}");
    let (good, _, err) = cli(
        &db,
        &[
            "tenants",
            "create",
            "globex",
            "--name",
            "Globex",
            "--db-role",
            "globex_x",
        ],
        Some(""),
        &key,
    );
    assert!(!good && err.contains("no password"), "{err}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM tenants WHERE slug = 'globex'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_action_leaves_its_audit_row_and_the_log_cannot_be_rewritten() {
    let db = test_db().await;
    let key = Keys::generate();
    let fake = copydesk::demo::platforms::FakePlatforms::start()
        .await
        .unwrap();
    let r = runner(&db, fast_settings(), app::registry());
    let role = format!("globex_{}", &Uuid::new_v4().simple().to_string()[..10]);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&db.pool)
        .await
        .unwrap();

    ok(cli(
        &db,
        &[
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme",
            "--by",
            "root-admin",
        ],
        None,
        &key,
    ));
    ok(cli(
        &db,
        &["tenants", "create", "globex", "--name", "Globex"],
        None,
        &key,
    ));
    ok(cli(
        &db,
        &["tenants", "grant-role", "globex", &role],
        None,
        &key,
    ));
    let acme = store::tenants::by_slug(&db.pool, "acme").await.unwrap();
    let token: Value = serde_json::from_str(&ok(cli(
        &db,
        &[
            "tokens", "create", "--tenant", "acme", "--role", "operator", "--name", "ci", "--json",
        ],
        None,
        &key,
    )))
    .unwrap();
    ok(cli(
        &db,
        &["tokens", "revoke", token["id"].as_str().unwrap()],
        None,
        &key,
    ));

    // A pipeline of acme's up to its drafts, started from the CLI.
    let site = store_page(1).await;
    let started: Value = serde_json::from_str(&ok(cli(
        &db,
        &[
            "pipeline",
            "start",
            "--new",
            "Linen",
            "--store-url",
            &site.uri(),
            "--channels",
            "blog,linkedin",
            "--tenant",
            "acme",
            "--json",
        ],
        None,
        &key,
    )))
    .unwrap();
    let project = started["project_id"].as_str().unwrap().to_owned();
    drain(&db, &r).await;
    let pending = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            store::approvals::list(
                &pool,
                Some(copydesk::domain::ApprovalStatus::Pending),
                None,
                None,
                10,
            )
            .await
            .unwrap()
        }
    };
    let bv = pending(&db).await;
    assert_eq!(bv.len(), 1);
    assert_eq!(bv[0].tenant_id, acme.id);
    ok(cli(
        &db,
        &["approvals", "approve", &bv[0].id.to_string(), "--by", "ana"],
        None,
        &key,
    ));
    drain(&db, &r).await;
    let mut drafts = pending(&db).await;
    assert_eq!(drafts.len(), 2, "{drafts:?}");
    // The blog draft first: it is the one published to WordPress below.
    let blog: Uuid = sqlx::query_scalar(
        "SELECT d.id FROM approvals a JOIN artifacts d ON d.id = a.artifact_id
         WHERE a.status = 'pending' AND d.channel = 'blog'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    drafts.sort_by_key(|a| a.artifact_id != blog);
    // Edit one draft, reject the other, approve the edit.
    let path = std::env::temp_dir().join(format!("edit-{}.txt", Uuid::new_v4()));
    std::fs::write(&path, "Linen, edited by a person.").unwrap();
    let edited = ok(cli(
        &db,
        &[
            "drafts",
            "edit",
            &drafts[0].artifact_id.to_string(),
            "--file",
            path.to_str().unwrap(),
            "--by",
            "ana",
        ],
        None,
        &key,
    ));
    let edited = edited.trim().to_owned();
    ok(cli(
        &db,
        &[
            "approvals",
            "approve",
            &drafts[0].id.to_string(),
            "--by",
            "ana",
        ],
        None,
        &key,
    ));
    ok(cli(
        &db,
        &[
            "approvals",
            "reject",
            &drafts[1].id.to_string(),
            "--notes",
            "shorter",
            "--by",
            "bo",
        ],
        None,
        &key,
    ));

    // An integration, set and tested, and a publication of the approved edit.
    let (creds, meta) = fake.integration(Platform::Wordpress);
    let creds_path = std::env::temp_dir().join(format!("creds-{}.json", Uuid::new_v4()));
    std::fs::write(&creds_path, creds.to_string()).unwrap();
    ok(cli(
        &db,
        &[
            "integrations",
            "set",
            "--project",
            &project,
            "--platform",
            "wordpress",
            "--credentials-file",
            creds_path.to_str().unwrap(),
            "--metadata",
            &meta.to_string(),
        ],
        None,
        &key,
    ));
    let integration = store::integrations::list(&db.pool, None, Some(acme.id))
        .await
        .unwrap()[0]
        .id;
    let tested = ok(cli(
        &db,
        &["integrations", "test", &integration.to_string(), "--json"],
        None,
        &key,
    ));
    assert!(tested.contains("\"ok\": true"), "{tested}");
    drain(&db, &r).await;
    ok(cli(
        &db,
        &[
            "publish",
            &edited,
            "--integration",
            &integration.to_string(),
            "--again",
        ],
        None,
        &key,
    ));

    // Jobs cancelled and retried by hand; keys rotated.
    let mut conn = db.pool.acquire().await.unwrap();
    let noop = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({})).tenant(acme.id),
    )
    .await
    .unwrap()
    .id;
    ok(cli(&db, &["jobs", "cancel", &noop.to_string()], None, &key));
    ok(cli(&db, &["jobs", "retry", &noop.to_string()], None, &key));
    let new_key = Keys::generate();
    ok(cli(
        &db,
        &["keys", "rotate"],
        None,
        &format!("{new_key},{key}"),
    ));
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(creds_path);

    let log: Value =
        serde_json::from_str(&ok(cli(&db, &["audit", "list", "--json"], None, &key))).unwrap();
    let entries: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["tenant"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let e = |t: &str, a: &str, x: &str| (t.to_owned(), a.to_owned(), x.to_owned());
    assert_eq!(
        entries,
        vec![
            e("acme", "root-admin", "tenant.created"),
            e("globex", "ops", "tenant.created"),
            e("globex", "ops", "tenant.role_granted"),
            e("acme", "ops", "token.created"),
            e("acme", "ops", "token.revoked"),
            e("acme", "ana", "approval.approved"),
            e("acme", "ana", "draft.edited"),
            e("acme", "ana", "approval.approved"),
            e("acme", "bo", "approval.rejected"),
            e("acme", "ops", "integration.set"),
            e("acme", "ops", "integration.tested"),
            e("acme", "ops", "publication.requested"),
            e("acme", "ops", "job.cancelled"),
            e("acme", "ops", "job.retried"),
            e("default", "ops", "keys.rotated"),
        ]
    );
    // No secret in any of it.
    let text = log.to_string();
    for s in [token["secret"].as_str().unwrap(), &key, &new_key] {
        assert!(!text.contains(s));
    }
    for v in creds.as_object().unwrap().values() {
        assert!(
            !text.contains(v.as_str().unwrap()),
            "a credential in the audit log"
        );
    }
    // Filters.
    let acme_only: Value = serde_json::from_str(&ok(cli(
        &db,
        &[
            "audit", "list", "--tenant", "acme", "--since", "1h", "--json",
        ],
        None,
        &key,
    )))
    .unwrap();
    assert_eq!(acme_only.as_array().unwrap().len(), 12);
    let none: Value = serde_json::from_str(&ok(cli(
        &db,
        &["audit", "list", "--since", "2999-01-01T00:00:00Z", "--json"],
        None,
        &key,
    )))
    .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0);

    // Append-only, for every role: the owner (a superuser here) included.
    for sql in [
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let mut s = session(&db, &role).await;
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut s)
        .await
        .unwrap();
    assert_eq!(visible, 2, "globex reads its own two entries");
    for sql in [
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
    ] {
        let err = sqlx::query(sql).execute(&mut s).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM audit_log").await, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_is_not_a_superuser_migrates_runs_jobs_and_maps_tenants() {
    // Managed Postgres gives the application an owner role without superuser: row
    // security is then forced on the owner too, and its own policy must admit it.
    let admin = test_db().await;
    let suffix = &Uuid::new_v4().simple().to_string()[..10];
    let (owner, name) = (format!("owner_{suffix}"), format!("t_owned_{suffix}"));
    for sql in [
        format!("CREATE ROLE {owner} LOGIN CREATEROLE"),
        format!("CREATE DATABASE {name} OWNER {owner}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin.pool)
            .await
            .unwrap();
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect_with(cluster().connect_options(&name).username(&owner))
        .await
        .unwrap();
    let is_super: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!is_super);
    copydesk::db::migrate(&pool, &copydesk::app::catalog())
        .await
        .unwrap();
    let db = TestDb {
        pool: pool.clone().into(),
        url: cluster()
            .url(&name)
            .replace(copydesk::db::embedded::SUPERUSER, &owner),
        name,
    };
    let (acme, globex) = (tenant(&db, "acme").await, tenant(&db, "globex").await);
    let a = seed(&db, &acme, "https://a.example").await;
    seed(&db, &globex, "https://g.example").await;
    // A single-company user's plain INSERT still lands in `default`.
    sqlx::query("INSERT INTO jobs (kind, input) VALUES ('noop', '{}')")
        .execute(&pool)
        .await
        .unwrap();
    let r = runner(&db, fast_settings(), app::registry());
    drain(&db, &r).await;
    assert_eq!(status_of(&db.pool, a.job).await, "done");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done' AND tenant_id = '00000000-0000-0000-0000-000000000001'").await,
        1
    );
    let mut owner_conn = pool.acquire().await.unwrap();
    for (table, own, other) in visible(&mut owner_conn, acme.id).await {
        assert!(own > 0 && other > 0, "{table}: the owner sees every tenant");
    }
    let mut s = session(&db, &acme.role).await;
    assert_only_own(&visible(&mut s, acme.id).await, "acme");
}

/// Every table with a `tenant_id`, the ones added after the list above among them
/// (notification channels, event subscriptions, events, deliveries…), has row security
/// forced and a policy keeping a tenant's role to its own rows (`tenant_read`: its own
/// and the global ones, for settings and model configurations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_holding_a_tenants_rows_forces_row_security_with_a_tenant_policy() {
    let db = test_db().await;
    let unguarded: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
          WHERE c.relkind = 'r'
            AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                     AND EXISTS (SELECT 1 FROM pg_policy p
                                  WHERE p.polrelid = c.oid
                                    AND p.polname IN ('tenant_own', 'tenant_read')))
          ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        unguarded.is_empty(),
        "tables without a tenant's row security: {unguarded:?}"
    );
    let guarded = count(
        &db.pool,
        "SELECT count(*) FROM pg_policy WHERE polname = 'tenant_own'
            AND polrelid IN ('event_subscriptions'::regclass, 'events'::regclass,
                             'event_deliveries'::regclass)",
    )
    .await;
    assert_eq!(guarded, 3);
}

/// A channel or a subscription naming another tenant's project is refused by the
/// database, by name, whoever writes it (the owner's CLI included), and nothing is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_or_a_subscription_for_another_tenants_project_is_refused_by_name() {
    let db = test_db().await;
    let (ok, _, err) = copydesk(&db, &["tenants", "create", "acme", "--name", "Acme"]);
    assert!(ok, "{err}");
    let theirs: Uuid =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('default''s own') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let keys = copydesk::keys::Keys::generate();
    let env = [("COPYDESK_FERNET_KEYS", keys.as_str())];
    let project = theirs.to_string();
    for args in [
        vec![
            "notifications",
            "channels",
            "add",
            "webhook",
            "https://hooks.example/x",
            "--tenant",
            "acme",
            "--project",
            &project,
        ],
        vec![
            "events",
            "subscribe",
            "https://orders.example/x",
            "--tenant",
            "acme",
            "--project",
            &project,
        ],
    ] {
        let (ok, _, err) = copydesk_at(&db.url, &env, &args);
        assert!(!ok, "{args:?} was taken");
        assert!(
            err.contains("refers to project") && err.contains(&project),
            "{err}"
        );
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT (SELECT count(*) FROM notification_channels) + (SELECT count(*) FROM event_subscriptions)"
        )
        .await,
        0
    );
    // Their own project is fine.
    let (ok, _, err) = copydesk_at(
        &db.url,
        &env,
        &[
            "events",
            "subscribe",
            "https://orders.example/x",
            "--project",
            &project,
        ],
    );
    assert!(ok, "{err}");
}
