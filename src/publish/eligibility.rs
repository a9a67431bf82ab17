//! Whether a draft may go to an integration: one check, made when a publication is
//! requested (`pipeline::publication::request`, in the asking transaction) and again
//! when its `publishing` job runs (rows change in between, and a job can be inserted by
//! plain SQL without asking anyone).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{ArtifactKind, Channel, Platform},
    store::{self, artifacts::Publishable},
};

/// Why a draft may not go where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error(
        "artifact {0} has no approved approval: approve it first (`copydesk approvals approve`)"
    )]
    NotApproved(Uuid),
    #[error("artifact {id} is a {kind}, not a draft")]
    NotADraft { id: Uuid, kind: ArtifactKind },
    #[error("artifact {0} has no channel to publish to")]
    NoChannel(Uuid),
    #[error(
        "integration {integration} publishes to {platform}, which does not take {channel} drafts"
    )]
    WrongChannel {
        integration: Uuid,
        platform: Platform,
        channel: Channel,
    },
    #[error("integration {integration} belongs to another project than artifact {artifact}")]
    OtherProject { integration: Uuid, artifact: Uuid },
    #[error("integration {integration} belongs to another tenant than artifact {artifact}")]
    OtherTenant { integration: Uuid, artifact: Uuid },
    #[error(
        "no integration for the {channel} channel in this project (add one with `copydesk integrations set --platform {}`)",
        Platform::for_channel(*channel)[0]
    )]
    NoIntegration { channel: Channel },
}

/// The check failed, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ineligible(#[from] Ineligible),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Where an eligible draft goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub integration: Uuid,
    pub platform: Platform,
    pub project: Uuid,
}

/// An approved draft with a channel, and where it goes if anywhere is known.
#[derive(Debug, Clone)]
pub struct Eligible {
    pub draft: Publishable,
    pub channel: Channel,
    /// The integration asked for, else the project's for the draft's channel; `None`
    /// when neither exists.
    pub target: Option<Target>,
}

impl Eligible {
    /// The target, which a post needs.
    pub fn target(&self) -> Result<Target, Ineligible> {
        self.target.ok_or(Ineligible::NoIntegration {
            channel: self.channel,
        })
    }
}

/// Checks that `artifact` is an approved draft with a channel, and that `integration`
/// (else the project's integration for that channel; `project` stands in for a draft
/// that has none) takes that channel and belongs to the draft's tenant and project.
pub async fn check(
    conn: &mut PgConnection,
    artifact: Uuid,
    integration: Option<Uuid>,
    project: Option<Uuid>,
) -> Result<Eligible, Error> {
    let draft = store::artifacts::publishable(&mut *conn, artifact).await?;
    if draft.kind != ArtifactKind::Draft {
        return Err(Ineligible::NotADraft {
            id: draft.id,
            kind: draft.kind,
        }
        .into());
    }
    if !draft.approved {
        return Err(Ineligible::NotApproved(draft.id).into());
    }
    let channel = draft.channel.ok_or(Ineligible::NoChannel(draft.id))?;
    let project = draft.project_id.or(project);
    let target = match (integration, project) {
        (Some(id), _) => {
            let i = store::integrations::get(&mut *conn, id).await?;
            if i.tenant_id != draft.tenant_id {
                return Err(Ineligible::OtherTenant {
                    integration: id,
                    artifact: draft.id,
                }
                .into());
            }
            if i.platform.channel() != channel {
                return Err(Ineligible::WrongChannel {
                    integration: id,
                    platform: i.platform,
                    channel,
                }
                .into());
            }
            if project.is_some_and(|p| p != i.project_id) {
                return Err(Ineligible::OtherProject {
                    integration: id,
                    artifact: draft.id,
                }
                .into());
            }
            Some(Target {
                integration: id,
                platform: i.platform,
                project: i.project_id,
            })
        }
        (None, Some(project)) => store::integrations::for_channel(&mut *conn, project, channel)
            .await?
            .map(|(integration, platform)| Target {
                integration,
                platform,
                project,
            }),
        (None, None) => None,
    };
    Ok(Eligible {
        draft,
        channel,
        target,
    })
}
