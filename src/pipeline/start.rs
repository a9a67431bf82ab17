//! Starting the pipeline for a project: brand voice first, then drafts per channel.
//! `copydesk pipeline start` and the demo both come here.

use copydesk_queue::{Catalog, Enqueued, NewJob};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Error, Plan, Result};
use crate::{
    jobs::brand_voice_analysis::BrandVoiceArgs,
    store::{self, tenants::Tenant},
};

/// The project a pipeline runs for.
#[derive(Debug, Clone)]
pub enum ProjectRef {
    Existing(Uuid),
    /// Create one with this name (and the store URL).
    New(String),
}

/// What a start did.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    pub project_id: Uuid,
    pub job: Enqueued,
}

/// Creates the project when asked (in `tenant`; none: `default`) and enqueues its brand
/// voice analysis with `plan`, inside the caller's transaction. An existing project
/// must be `tenant`'s when a tenant is given.
pub async fn start(
    conn: &mut PgConnection,
    catalog: &Catalog,
    tenant: Option<&Tenant>,
    project: ProjectRef,
    store_url: &str,
    plan: Plan,
) -> Result<Started> {
    let project_id = match project {
        ProjectRef::Existing(id) => {
            let owner =
                store::projects::tenant(&mut *conn, id)
                    .await?
                    .ok_or(store::Error::NotFound {
                        what: "project",
                        id,
                    })?;
            if let Some(t) = tenant.filter(|t| t.id != owner) {
                return Err(Error::OtherTenant {
                    what: "project",
                    id,
                    tenant: t.slug.clone(),
                });
            }
            id
        }
        ProjectRef::New(name) => {
            store::projects::create(&mut *conn, tenant.map(|t| t.id), &name, Some(store_url))
                .await?
        }
    };
    let args = BrandVoiceArgs {
        store_url: Some(store_url.to_owned()),
        samples: Vec::new(),
        pipeline: Some(plan),
    };
    let job =
        copydesk_queue::enqueue(conn, catalog, &NewJob::of(&args).project(project_id)).await?;
    Ok(Started { project_id, job })
}
