//! `tenants` and `tenant_roles`: the companies sharing one database, and the database
//! roles that are each of them. A role mapped to a tenant is granted the group role
//! `copydesk_tenant`, whose row-level security policies show it that tenant's rows only.

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Error, Result};
pub use crate::domain::DEFAULT_TENANT;

/// One tenant, with the database roles mapped to it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub settings: Value,
    pub created_at: DateTime<Utc>,
    pub roles: Vec<String>,
}

const COLUMNS: &str = "t.id, t.slug, t.name, t.settings, t.created_at,
    coalesce(array_agg(r.role_name ORDER BY r.role_name) FILTER (WHERE r.role_name IS NOT NULL), '{}') AS roles";

/// Every tenant, by slug.
pub async fn list(pool: &Db) -> Result<Vec<Tenant>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants t LEFT JOIN tenant_roles r ON r.tenant_id = t.id
         GROUP BY t.id ORDER BY t.slug"
    )))
    .fetch_all(pool)
    .await?)
}

/// The tenant with this slug.
pub async fn by_slug(db: impl PgExecutor<'_>, slug: &str) -> Result<Tenant> {
    crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants t LEFT JOIN tenant_roles r ON r.tenant_id = t.id
         WHERE t.slug = $1 GROUP BY t.id"
    )))
    .bind(slug)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| {
        Error::Invalid(format!(
            "no tenant {slug:?} (`copydesk tenants list` shows them)"
        ))
    })
}

/// The id of the tenant with this slug, or none for none.
pub async fn resolve(db: impl PgExecutor<'_>, slug: Option<&str>) -> Result<Option<Uuid>> {
    Ok(match slug {
        Some(s) => Some(by_slug(db, s).await?.id),
        None => None,
    })
}

/// Creates a tenant, recorded in `audit_log` as done `by`.
pub async fn create(conn: &mut PgConnection, slug: &str, name: &str, by: &str) -> Result<Tenant> {
    let id: Option<Uuid> = crate::db::query_scalar(
        "INSERT INTO tenants (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING RETURNING id",
    )
    .bind(slug)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
        Some(c) if c == "23514" => Error::Invalid(format!(
            "{slug:?} is not a tenant slug: lower-case letters, digits, - and _, at most 63"
        )),
        _ => Error::Sql(e),
    })?;
    let Some(id) = id else {
        return Err(Error::Invalid(format!("a tenant {slug:?} exists already")));
    };
    super::audit::record(
        &mut *conn,
        &super::audit::Entry {
            tenant: Some(id),
            actor: by,
            action: "tenant.created",
            target_table: Some("tenants"),
            target_id: Some(id),
            details: serde_json::json!({"slug": slug, "name": name}),
        },
    )
    .await?;
    by_slug(&mut *conn, slug).await
}

/// Creates a LOGIN role with `password` (never part of a statement's text).
pub async fn create_login_role(conn: &mut PgConnection, role: &str, password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::Invalid(format!(
            "the password for role {role:?} is empty"
        )));
    }
    crate::db::query("SELECT copydesk_create_login_role($1, $2)")
        .bind(role)
        .bind(password)
        .execute(conn)
        .await
        .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
            Some(c) if c == "42710" => Error::Invalid(format!(
                "a role {role:?} exists already: map it with `copydesk tenants grant-role`"
            )),
            _ => Error::Sql(e),
        })?;
    Ok(())
}

/// Maps an existing role to `tenant`: it becomes a member of `copydesk_tenant` and
/// sees, writes and deletes only that tenant's rows. Recorded in `audit_log` as done
/// `by`.
pub async fn grant_role(conn: &mut PgConnection, tenant: Uuid, role: &str, by: &str) -> Result<()> {
    let exists: bool =
        crate::db::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(Error::Invalid(format!("no database role {role:?}")));
    }
    let privileged: bool = crate::db::query_scalar(
        "SELECT rolsuper OR rolbypassrls OR rolname = current_user FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_one(&mut *conn)
    .await?;
    if privileged {
        return Err(Error::Invalid(format!(
            "role {role:?} is a superuser, bypasses row-level security or owns copydesk's tables: \
             it would see every tenant; map a role of its own"
        )));
    }
    let mapped: Option<Uuid> = crate::db::query_scalar(
        "INSERT INTO tenant_roles (role_name, tenant_id) VALUES ($1, $2)
         ON CONFLICT (role_name) DO NOTHING RETURNING tenant_id",
    )
    .bind(role)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    if mapped.is_none() {
        return Err(Error::Invalid(format!(
            "role {role:?} is mapped to a tenant already"
        )));
    }
    let grant: String =
        crate::db::query_scalar("SELECT format('GRANT copydesk_tenant TO %I', $1::text)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(grant))
        .execute(&mut *conn)
        .await?;
    super::audit::record(
        &mut *conn,
        &super::audit::Entry {
            tenant: Some(tenant),
            actor: by,
            action: "tenant.role_granted",
            target_table: Some("tenants"),
            target_id: Some(tenant),
            details: serde_json::json!({"role": role}),
        },
    )
    .await?;
    Ok(())
}
