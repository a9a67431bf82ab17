//! `copydesk files`: images for posts, style samples and exports, stored once per tenant
//! by SHA-256 in the `[files]` object store.

use std::io::Write;

use clap::Subcommand;
use uuid::Uuid;

use super::{Env, JsonFlag, TenantFlag};
use crate::{domain::FileKind, files::Files, store};

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Store a file for a project's tenant; prints its id (the same id when the tenant
    /// has these bytes already).
    Put {
        path: std::path::PathBuf,
        #[arg(long, value_parser = super::parse_id)]
        project: Uuid,
        /// What it is for: image (a post's picture), sample (a style sample) or export.
        #[arg(long, default_value = "image")]
        kind: FileKind,
    },
    /// A file's bytes: to --output, else to standard output.
    Get {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        tenant: TenantFlag,
    },
    /// Files, newest first.
    List {
        #[arg(long, value_parser = super::parse_id)]
        project: Option<Uuid>,
        #[command(flatten)]
        tenant: TenantFlag,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Name an image as a blog draft's picture: WordPress's featured image, Shopify's
    /// article image. Later versions of the draft keep it.
    Attach {
        #[arg(value_parser = super::parse_id)]
        file: Uuid,
        /// The blog draft (an artifact id).
        #[arg(long, value_parser = super::parse_id)]
        draft: Uuid,
    },
}

/// Records a write to a file in the audit log, in its transaction.
async fn audited(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: Uuid,
    by: &str,
    action: &str,
    file: Uuid,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    store::audit::record(
        &mut **tx,
        &store::audit::Entry {
            tenant: Some(tenant),
            actor: by,
            action,
            target_table: Some("files"),
            target_id: Some(file),
            details,
        },
    )
    .await?;
    Ok(())
}

pub async fn run(
    cmd: FilesCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        FilesCommand::Put {
            path,
            project,
            kind,
        } => {
            let tenant = store::projects::tenant(pool, project)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no project {project}"))?;
            let bytes = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("{} cannot be read: {e}", path.display()))?;
            let files = Files::new(&env.settings)?;
            let name = path.to_string_lossy();
            let mut tx = pool.begin().await?;
            let (id, new) = files
                .put(
                    &mut *tx,
                    &crate::files::Put {
                        tenant,
                        project: Some(project),
                        kind,
                        name: &name,
                        bytes: &bytes,
                    },
                    by,
                )
                .await?;
            if new {
                audited(
                    &mut tx,
                    tenant,
                    by,
                    "file.put",
                    id,
                    serde_json::json!({
                        "name": name, "kind": kind, "project_id": project, "size": bytes.len(),
                    }),
                )
                .await?;
            }
            tx.commit().await?;
            eprintln!(
                "{} ({} bytes) {} in {}",
                path.display(),
                bytes.len(),
                if new { "stored" } else { "was stored already" },
                files.shown()
            );
            writeln!(out, "{id}")?;
        }
        FilesCommand::Get { id, output, tenant } => {
            let file = store::files::get(pool, tenant.id(env).await?, id).await?;
            let bytes = Files::new(&env.settings)?.read(&file).await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, &bytes).map_err(|e| {
                        anyhow::anyhow!("{} cannot be written: {e}", path.display())
                    })?;
                    eprintln!(
                        "{} ({} bytes) written to {}",
                        file.name,
                        bytes.len(),
                        path.display()
                    );
                }
                None => out.write_all(&bytes)?,
            }
        }
        FilesCommand::List {
            project,
            tenant,
            limit,
            json,
        } => {
            let list = store::files::list(pool, tenant.id(env).await?, project, limit).await?;
            json.print(
                out,
                list,
                "no files",
                &[
                    "ID", "TENANT", "KIND", "NAME", "TYPE", "BYTES", "SHA-256", "PUT",
                ],
                |f| {
                    vec![
                        f.id.to_string(),
                        f.tenant,
                        f.kind.to_string(),
                        f.name,
                        f.content_type,
                        f.size.to_string(),
                        f.sha256[..12].to_owned(),
                        f.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    ]
                },
            )?;
        }
        FilesCommand::Attach { file, draft } => {
            let mut tx = pool.begin().await?;
            store::files::attach_image(&mut *tx, draft, file).await?;
            let tenant = store::files::get(&mut *tx, None, file).await?.tenant_id;
            audited(
                &mut tx,
                tenant,
                by,
                "file.attached",
                file,
                serde_json::json!({
                    "draft_artifact_id": draft,
                }),
            )
            .await?;
            tx.commit().await?;
            writeln!(out, "draft {draft} publishes with image {file}")?;
        }
    }
    Ok(())
}
