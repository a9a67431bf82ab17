//! The schema's two owners and its history: a fresh database (the engine's migrations,
//! then the application's) and a database made by the migrations of a copydesk from
//! before the engine owned its schema end with one schema, line for line; and a dump of
//! such a database, with rows in every table, upgrades with nothing lost and runs on.

mod common;

use std::collections::BTreeMap;

use common::*;
use copydesk::{
    db::Db,
    queue::{JobStatus, runner::run_once},
};
use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};
use uuid::Uuid;

/// The dump: see its first lines for what it holds and how it was made.
const D56E12B: &str = include_str!("fixtures/d56e12b.sql");

/// Where each owner records what it applied: history, not schema.
const HISTORIES: [&str; 3] = [
    "_sqlx_migrations",
    "copydesk_migrations",
    "copydesk_queue_migrations",
];

/// An empty database of the test cluster.
async fn empty_db() -> TestDb {
    let name = format!("m_{}", Uuid::new_v4().simple());
    cluster().create_database(&name).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(cluster().connect_options(&name))
        .await
        .unwrap();
    TestDb {
        pool: Db::new(pool),
        url: cluster().url(&name),
        name,
    }
}

/// What the schema is, each thing a line, sorted (so a column's place in its table does
/// not count: the application's columns of `jobs` come after the engine's on a fresh
/// database): columns, constraints, indexes, triggers, functions with their bodies,
/// views, tables' options and row security, policies, grants, comments.
async fn schema(pool: &Db) -> Vec<String> {
    let queries = [
        "SELECT format('column %s.%s %s %s %s', c.relname, a.attname,
                       format_type(a.atttypid, a.atttypmod),
                       CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                       coalesce(pg_get_expr(d.adbin, d.adrelid), ''))
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped",
        "SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
        "SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'",
        "SELECT format('trigger %s %s', tgrelid::regclass, pg_get_triggerdef(oid))
         FROM pg_trigger WHERE NOT tgisinternal",
        "SELECT 'function ' || pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '')
         FROM pg_proc p WHERE pronamespace = 'public'::regnamespace",
        "SELECT format('relation %s %s rls=%s forced=%s %s acl %s', relname, relkind, relrowsecurity,
                       relforcerowsecurity, coalesce(reloptions::text, ''), coalesce(relacl::text, ''))
         FROM pg_class WHERE relnamespace = 'public'::regnamespace",
        "SELECT format('view %s %s', viewname, definition) FROM pg_views WHERE schemaname = 'public'",
        "SELECT format('policy %s %s %s %s %s %s', tablename, policyname, roles, cmd, qual, with_check)
         FROM pg_policies",
        "SELECT format('column grant %s %s %s.%s', grantee, privilege_type, table_name, column_name)
         FROM information_schema.column_privileges
         WHERE table_schema = 'public' AND grantee <> current_user",
        "SELECT format('comment %s %s', c.relname, obj_description(c.oid, 'pg_class'))
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
           AND obj_description(c.oid, 'pg_class') IS NOT NULL",
    ];
    let mut lines = Vec::new();
    for q in queries {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_all(pool)
            .await
            .unwrap();
        lines.extend(
            rows.into_iter()
                .filter(|l| !HISTORIES.iter().any(|h| l.contains(h))),
        );
    }
    lines.sort();
    lines
}

/// The rows a database starts with, and the kinds it knows.
async fn seeds(pool: &Db) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('tenant %s %s %s', id, slug, name) FROM tenants
          WHERE id = '00000000-0000-0000-0000-000000000001'
         UNION ALL
         SELECT format('agent %s %s %s %s %s %s %s', agent_id, agent_label, model_id, temperature,
                       max_tokens, fallback_model_ids, tenant_id) FROM agent_model_configs
         UNION ALL
         SELECT 'kind ' || name FROM job_kinds
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn assert_same(want: &[String], got: &[String], what: &str) {
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:#?}\nextra {extra:#?}"
    );
}

/// Rows in every table but the histories.
async fn row_counts(pool: &Db) -> BTreeMap<String, i64> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = BTreeMap::new();
    for t in tables
        .into_iter()
        .filter(|t| !HISTORIES.contains(&t.as_str()))
    {
        counts.insert(
            t.clone(),
            count(pool, &format!("SELECT count(*) FROM \"{t}\"")).await,
        );
    }
    counts
}

#[tokio::test]
async fn a_fresh_database_and_one_the_legacy_migrations_made_end_with_one_schema() {
    let fresh = test_db().await;
    let old = empty_db().await;
    copydesk::db::LEGACY.run(old.pool.pool()).await.unwrap();
    assert!(
        count(&old.pool, "SELECT count(*) FROM jobs").await == 0,
        "the legacy migrations made the old schema"
    );
    let ran = copydesk::db::migrate(old.pool.pool(), &catalog())
        .await
        .unwrap();
    // The baselines are recorded, not run: only what came after them ran.
    let after_baselines = copydesk::db::MIGRATOR
        .iter()
        .chain(copydesk::queue::schema::migrator().iter())
        .filter(|m| m.migration_type.is_up_migration() && !m.description.contains("baseline"))
        .count();
    assert_eq!(ran, after_baselines);
    assert_same(
        &schema(&fresh.pool).await,
        &schema(&old.pool).await,
        "upgraded vs fresh",
    );
    assert_same(&seeds(&fresh.pool).await, &seeds(&old.pool).await, "rows");
    assert!(copydesk::db::pending(&old.pool).await.unwrap().is_empty());
    // And once more changes nothing.
    assert_eq!(
        copydesk::db::migrate(old.pool.pool(), &catalog())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_dump_of_the_last_legacy_version_upgrades_with_nothing_lost_and_runs_on() {
    let db = empty_db().await;
    // pg_dump's own session settings (an empty search_path) stay on this connection.
    let mut conn = PgConnection::connect_with(&cluster().connect_options(&db.name))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(D56E12B))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let before = row_counts(&db.pool).await;
    assert!(
        before.values().all(|n| *n > 0),
        "the dump has rows in every table: {before:?}"
    );
    let links = "SELECT md5(string_agg(format('%s %s %s %s %s %s', id, kind, status, tenant_id,
                        input_artifact_id, output_artifact_id), ',' ORDER BY id)) FROM jobs";
    let links_before: String = sqlx::query_scalar(links).fetch_one(&db.pool).await.unwrap();

    copydesk::db::migrate(db.pool.pool(), &catalog())
        .await
        .unwrap();

    let mut after = row_counts(&db.pool).await;
    assert!(after.remove("job_kinds").unwrap() >= catalog().names().len() as i64);
    // Each kind's contract, registered with the kinds by the migrate.
    assert_eq!(
        after.remove("job_kind_versions"),
        Some(catalog().names().len() as i64)
    );
    // Tables made since the dump (copydesk_workers) start empty.
    let new: Vec<String> = after
        .keys()
        .filter(|t| !before.contains_key(*t))
        .cloned()
        .collect();
    for t in new {
        assert_eq!(
            after.remove(&t),
            Some(0),
            "{t}, new since the dump, starts empty"
        );
    }
    assert_eq!(before, after, "every row is still there");
    let links_after: String = sqlx::query_scalar(links).fetch_one(&db.pool).await.unwrap();
    assert_eq!(links_before, links_after, "jobs keep their columns");
    let fresh = test_db().await;
    assert_same(
        &schema(&fresh.pool).await,
        &schema(&db.pool).await,
        "upgraded dump vs fresh",
    );

    // The job the old version left queued runs; the failed one is retried and runs.
    let queued: Uuid =
        sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = 'legacy-queued-noop'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let r = runner(&db, fast_settings(), copydesk::app::registry());
    let (id, _) = run_once(&r, &["noop"])
        .await
        .unwrap()
        .expect("a job to run");
    assert_eq!(id, queued);
    assert_eq!(status_of(&db.pool, queued).await, "done");
    let failed: Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE last_error = 'boom 42'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let job = copydesk::queue::ops::retry(&db.pool, failed).await.unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(run_once(&r, &["noop"]).await.unwrap().unwrap().0, failed);
    assert_eq!(status_of(&db.pool, failed).await, "done");

    // A tenant enqueues by plain SQL as before; a misspelt kind still fails at once.
    let globex: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'globex'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE copydesk_api")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('copydesk.tenant_id', $1, true)")
        .bind(globex.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let tenant: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING tenant_id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(tenant, globex);
    let err = sqlx::query("INSERT INTO jobs (kind, input) VALUES ('nopp', '{}')")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown job kind 'nopp'"), "{err}");
}
