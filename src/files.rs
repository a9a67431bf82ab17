//! Files' bytes in object storage (`[files]`): a local folder under COPYDESK_HOME by
//! default, any S3-compatible store by configuration, both through `object_store`.
//! A tenant's bytes are stored once, under `tenants/<tenant>/<sha256>`: the bytes are
//! written (unless already there) before the `files` row names them, so a crash in
//! between leaves an object a second put reuses, never a row without its bytes. What
//! is read back is checked against its SHA-256.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    config::{FileStoreKind, Settings},
    domain::FileKind,
    store::{self, files::File},
};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("[files] {0}")]
    Settings(String),
    #[error("{name} is empty: there is nothing to store")]
    Empty { name: String },
    #[error("{name} is {size} bytes, over the {max} bytes [files] max_bytes takes")]
    TooBig { name: String, size: u64, max: u64 },
    #[error(
        "{name} is {content_type}, which [files] allowed_types does not take (it takes {allowed})"
    )]
    TypeRefused {
        name: String,
        content_type: String,
        allowed: String,
    },
    #[error("{name} is {content_type}, not an image: put it with --kind sample or export")]
    NotAnImage { name: String, content_type: String },
    #[error("{0:?} has no file name to keep")]
    BadName(String),
    #[error("the file store ({store}): {why}")]
    Store { store: String, why: String },
    #[error(
        "the stored bytes of file {id} do not match its SHA-256 (they were changed in the store): refusing to use them"
    )]
    Corrupt { id: Uuid },
    #[error(transparent)]
    Db(#[from] store::Error),
}

impl FileError {
    /// Worth trying again later: the store or the database could not be reached.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { .. } => true,
            Self::Db(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// The configured object store.
#[derive(Clone)]
pub struct Files {
    store: Arc<dyn ObjectStore>,
    /// The local folder keys are under (the whole file system is the store).
    local_base: Option<std::path::PathBuf>,
    prefix: String,
    /// Where, as said in messages: the folder, or the bucket and endpoint.
    shown: String,
    max_bytes: u64,
    allowed: Vec<String>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("at", &self.shown).finish()
    }
}

impl Files {
    /// From the settings (and for S3 the AWS_* variables). The local folder is made
    /// when missing.
    pub fn new(settings: &Settings) -> Result<Self, FileError> {
        let s = &settings.files;
        let mut local_base = None;
        let (store, shown): (Arc<dyn ObjectStore>, String) = match s.store {
            FileStoreKind::Local => {
                let dir = if s.local_dir.is_empty() {
                    settings.home().join("files")
                } else {
                    std::path::PathBuf::from(&s.local_dir)
                };
                // Made by the first put, not here: a worker that never stores a file
                // leaves no folder behind.
                let dir = std::path::absolute(&dir).map_err(|e| {
                    FileError::Settings(format!("the folder {}: {e}", dir.display()))
                })?;
                local_base = Some(dir.clone());
                (
                    Arc::new(object_store::local::LocalFileSystem::new()),
                    dir.display().to_string(),
                )
            }
            FileStoreKind::S3 => {
                if s.s3.bucket.is_empty() {
                    return Err(FileError::Settings(
                        "store = \"s3\" needs [files.s3] bucket".into(),
                    ));
                }
                // The platform's HTTP client takes the same TLS provider as every other.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s.s3.bucket)
                    .with_region(&s.s3.region)
                    .with_allow_http(s.s3.allow_http);
                if !s.s3.endpoint.is_empty() {
                    b = b.with_endpoint(&s.s3.endpoint);
                }
                let s3 = b.build().map_err(|e| FileError::Settings(e.to_string()))?;
                let at = if s.s3.endpoint.is_empty() {
                    "AWS".to_owned()
                } else {
                    s.s3.endpoint.clone()
                };
                (Arc::new(s3), format!("bucket {} at {at}", s.s3.bucket))
            }
        };
        Ok(Self {
            store,
            local_base,
            prefix: if s.store == FileStoreKind::S3 {
                s.s3.prefix.trim_matches('/').to_owned()
            } else {
                String::new()
            },
            shown,
            max_bytes: s.max_bytes,
            allowed: s.allowed_types.clone(),
        })
    }

    /// Where the bytes live, as said in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn key(&self, tenant: Uuid, sha256: &str) -> String {
        let key = format!("tenants/{tenant}/{sha256}");
        if self.prefix.is_empty() {
            key
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Where a stored key is in the object store.
    fn location(&self, key: &str) -> Result<Path, FileError> {
        match &self.local_base {
            Some(base) => Path::from_absolute_path(base.join(key))
                .map_err(|e| FileError::Settings(format!("the folder {}: {e}", base.display()))),
            None => Ok(Path::from(key)),
        }
    }

    fn failed(&self, e: object_store::Error) -> FileError {
        FileError::Store {
            store: self.shown.clone(),
            why: e.to_string(),
        }
    }

    /// Checks a file against the limits: its content type, as read from its bytes.
    pub fn check(&self, name: &str, kind: FileKind, bytes: &[u8]) -> Result<String, FileError> {
        let name = name.to_owned();
        if bytes.is_empty() {
            return Err(FileError::Empty { name });
        }
        if bytes.len() as u64 > self.max_bytes {
            return Err(FileError::TooBig {
                name,
                size: bytes.len() as u64,
                max: self.max_bytes,
            });
        }
        let content_type = sniff(&name, bytes);
        if !self.allowed.contains(&content_type) {
            return Err(FileError::TypeRefused {
                name,
                content_type,
                allowed: self.allowed.join(", "),
            });
        }
        if kind == FileKind::Image && !content_type.starts_with("image/") {
            return Err(FileError::NotAnImage { name, content_type });
        }
        Ok(content_type)
    }

    /// Stores `bytes` for `tenant` (unless the same bytes are there already) and records
    /// the file: (its id, whether it is new to the tenant).
    /// The row is written through `db` (a transaction the caller may audit in).
    pub async fn put(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        put: &Put<'_>,
        by: &str,
    ) -> Result<(Uuid, bool), FileError> {
        let name = std::path::Path::new(put.name)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| FileError::BadName(put.name.to_owned()))?;
        let content_type = self.check(name, put.kind, put.bytes)?;
        let sha256 = sha256_hex(put.bytes);
        let key = self.key(put.tenant, &sha256);
        let path = self.location(&key)?;
        match self.store.head(&path).await {
            Ok(meta) if meta.size == put.bytes.len() as u64 => {}
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                self.store
                    .put(&path, PutPayload::from(Bytes::copy_from_slice(put.bytes)))
                    .await
                    .map_err(|e| self.failed(e))?;
            }
            Err(e) => return Err(self.failed(e)),
        }
        Ok(store::files::record(
            db,
            &store::files::NewFile {
                tenant: put.tenant,
                project: put.project,
                kind: put.kind,
                name,
                sha256: &sha256,
                size: put.bytes.len() as i64,
                content_type: &content_type,
                storage_key: &key,
            },
            by,
        )
        .await?)
    }

    /// A file's bytes, checked against its SHA-256.
    pub async fn read(&self, file: &File) -> Result<Bytes, FileError> {
        let bytes = self
            .store
            .get(&self.location(&file.storage_key)?)
            .await
            .map_err(|e| self.failed(e))?
            .bytes()
            .await
            .map_err(|e| self.failed(e))?;
        if sha256_hex(&bytes) != file.sha256 {
            return Err(FileError::Corrupt { id: file.id });
        }
        Ok(bytes)
    }
}

/// A file to put.
#[derive(Debug, Clone)]
pub struct Put<'a> {
    pub tenant: Uuid,
    pub project: Option<Uuid>,
    pub kind: FileKind,
    /// Its name (any folders are dropped).
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The content type of `bytes`, read from the bytes themselves (magic numbers); text
/// is `text/markdown` when its name says so, else `text/plain`; anything else is
/// `application/octet-stream`.
pub fn sniff(name: &str, bytes: &[u8]) -> String {
    if let Some(t) = infer::get(bytes) {
        return t.mime_type().to_owned();
    }
    if std::str::from_utf8(bytes).is_ok_and(|t| !t.contains('\0')) {
        let lower = name.to_ascii_lowercase();
        return if lower.ends_with(".md") || lower.ends_with(".markdown") {
            "text/markdown".into()
        } else {
            "text/plain".into()
        };
    }
    "application/octet-stream".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_come_from_the_bytes_not_the_name() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff("photo.jpg", png), "image/png");
        assert_eq!(sniff("notes.md", b"# Linen\n"), "text/markdown");
        assert_eq!(sniff("notes.png", b"# Linen\n"), "text/plain");
        assert_eq!(
            sniff(
                "x.png",
                &[b"\x7fELF\x02\x01\x01".as_slice(), &[0u8; 60]].concat()
            ),
            "application/x-executable"
        );
        assert_eq!(
            sniff("blob", &[0, 159, 146, 150]),
            "application/octet-stream"
        );
    }
}
