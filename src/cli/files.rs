//! `copydesk files`: images for posts, style samples and exports, stored once per tenant
//! by SHA-256 in the `[files]` object store.

use std::io::Write;

use clap::Subcommand;
use uuid::Uuid;

use super::{Env, JsonFlag, TenantFlag};
use crate::{files::Files, store};

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Store a file for a project's tenant; prints its id (the same id when the tenant
    /// has these bytes already).
    Put {
        path: std::path::PathBuf,
        #[arg(long, value_parser = super::parse_id)]
        project: Uuid,
        /// What it is for: image (a post's picture), sample (a style sample) or export.
        #[arg(long, default_value = "image", value_parser = ["image", "sample", "export"])]
        kind: String,
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
            let (id, new) = files
                .put(
                    pool,
                    &crate::files::Put {
                        tenant,
                        project: Some(project),
                        kind: &kind,
                        name: &name,
                        bytes: &bytes,
                    },
                    by,
                )
                .await?;
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
                        f.kind,
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
            store::files::attach_image(pool, draft, file).await?;
            writeln!(out, "draft {draft} publishes with image {file}")?;
        }
    }
    Ok(())
}
