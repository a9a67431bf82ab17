//! Files through the real `copydesk` binary: stored once per tenant by SHA-256, limits
//! on size and type read from the bytes, tampered bytes refused, and the same
//! commands against a local folder and a real S3-compatible server (s3s-fs, started
//! by the test, checking AWS signatures).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use uuid::Uuid;

/// A 1×1 PNG.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xff\x89\x99=\x1d\0\0\0\0IEND\xaeB`\x82";

async fn project_of(db: &TestDb, tenant: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO projects (name, tenant_id) SELECT 'Linen & Loom', id FROM tenants WHERE slug = $1
         RETURNING id",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Every regular file under `dir`.
fn stored(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                found.push(p);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_are_stored_once_per_tenant_and_limits_name_what_is_wrong() {
    let db = test_db().await;
    sqlx::query("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (ours, theirs) = (
        project_of(&db, "default").await,
        project_of(&db, "acme").await,
    );
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let env = [("COPYDESK_HOME", home.path().to_str().unwrap())];
    let run = |args: &[&str]| copydesk_at(&db.url, &env, args);
    let photo = work.path().join("linen.png");
    std::fs::write(&photo, PNG).unwrap();
    let again = work.path().join("same-bytes-other-name.png");
    std::fs::write(&again, PNG).unwrap();

    let (ok, out, err) = run(&[
        "files",
        "put",
        photo.to_str().unwrap(),
        "--project",
        &ours.to_string(),
    ]);
    assert!(ok, "{err}");
    let id: Uuid = out.trim().parse().unwrap();
    assert!(err.contains("stored in"), "{err}");
    let (ok, out, err) = run(&[
        "files",
        "put",
        again.to_str().unwrap(),
        "--project",
        &ours.to_string(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        id.to_string(),
        "the same bytes are the same file"
    );
    assert!(err.contains("was stored already"), "{err}");
    // Another tenant's copy is its own row (no tenant learns what another holds).
    let (ok, out, err) = run(&[
        "files",
        "put",
        photo.to_str().unwrap(),
        "--project",
        &theirs.to_string(),
    ]);
    assert!(ok, "{err}");
    let theirs_id: Uuid = out.trim().parse().unwrap();
    assert_ne!(theirs_id, id);
    let objects = stored(&home.path().join("files"));
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(objects.iter().all(|o| std::fs::read(o).unwrap() == PNG));
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT t.slug, f.content_type, f.size, f.sha256 FROM files f JOIN tenants t ON t.id = f.tenant_id ORDER BY t.slug",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let sha = copydesk::files::sha256_hex(PNG);
    assert_eq!(
        rows,
        [
            (
                "acme".into(),
                "image/png".into(),
                PNG.len() as i64,
                sha.clone()
            ),
            (
                "default".into(),
                "image/png".into(),
                PNG.len() as i64,
                sha.clone()
            )
        ]
    );

    // Read back: to stdout, and to a file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .args(["files", "get", &id.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("COPYDESK_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, PNG);
    let copy = work.path().join("copy.png");
    let (ok, _, err) = run(&[
        "files",
        "get",
        &id.to_string(),
        "--output",
        copy.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), PNG);
    // One tenant's command does not reach another's file.
    let (ok, _, err) = run(&[
        "files",
        "get",
        &theirs_id.to_string(),
        "--tenant",
        "default",
    ]);
    assert!(!ok);
    assert!(err.contains(&format!("no file {theirs_id}")), "{err}");
    let (ok, out, err) = run(&["files", "list", "--tenant", "acme", "--json"]);
    assert!(ok, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], theirs_id.to_string());
    assert_eq!(list[0]["name"], "linen.png");
    assert!(list[0].get("storage_key").is_none());

    // Limits: the size, the type read from the bytes (not the name), images only as
    // images. Nothing refused is stored.
    let big = work.path().join("big.png");
    std::fs::write(&big, PNG).unwrap();
    let (ok, _, err) = copydesk_at(
        &db.url,
        &[
            ("COPYDESK_HOME", home.path().to_str().unwrap()),
            ("COPYDESK__FILES__MAX_BYTES", "10"),
        ],
        &[
            "files",
            "put",
            big.to_str().unwrap(),
            "--project",
            &ours.to_string(),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "big.png is {} bytes, over the 10 bytes [files] max_bytes takes",
            PNG.len()
        )),
        "{err}"
    );
    let program = work.path().join("innocent.png");
    std::fs::write(
        &program,
        [b"\x7fELF\x02\x01\x01".as_slice(), &[0u8; 60]].concat(),
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "files",
        "put",
        program.to_str().unwrap(),
        "--project",
        &ours.to_string(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(
            "innocent.png is application/x-executable, which [files] allowed_types does not take"
        ),
        "{err}"
    );
    let notes = work.path().join("voice.md");
    std::fs::write(&notes, "# Our voice\nWarm, plain, no hype.\n").unwrap();
    let (ok, _, err) = run(&[
        "files",
        "put",
        notes.to_str().unwrap(),
        "--project",
        &ours.to_string(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("voice.md is text/markdown, not an image: put it with --kind sample"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "files",
        "put",
        notes.to_str().unwrap(),
        "--project",
        &ours.to_string(),
        "--kind",
        "sample",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "files",
        "put",
        photo.to_str().unwrap(),
        "--project",
        &Uuid::new_v4().to_string(),
    ]);
    assert!(!ok);
    assert!(err.contains("no project"), "{err}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM files").await, 3);
    // Each new file is audited (a put of bytes already stored writes nothing).
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'file.put' AND target_table = 'files'"
        )
        .await,
        3
    );
    assert_eq!(stored(&home.path().join("files")).len(), 3);

    // Bytes changed in the store behind copydesk's back are refused, not served.
    let key: String = sqlx::query_scalar("SELECT storage_key FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    std::fs::write(
        home.path().join("files").join(&key),
        b"\x89PNG\r\n\x1a\nnot the same",
    )
    .unwrap();
    let (ok, _, err) = run(&["files", "get", &id.to_string()]);
    assert!(!ok);
    assert!(err.contains("do not match its SHA-256"), "{err}");
}

/// A real S3-compatible server (s3s-fs: the s3s project's file-system store, checking
/// AWS SigV4 signatures) on loopback, with one bucket; its root folder.
async fn s3_server(access: &str, secret: &str) -> (String, tempfile::TempDir) {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto::Builder,
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("copydesk-files")).unwrap();
    let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(access, secret));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (url, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_compatible_store_round_trips_and_refuses_a_wrong_key() {
    let db = test_db().await;
    let project = project_of(&db, "default").await;
    let (endpoint, root) = s3_server("copydesk-access", "copydesk-secret-key-1234").await;
    let work = tempfile::tempdir().unwrap();
    let photo = work.path().join("linen.png");
    std::fs::write(&photo, PNG).unwrap();
    let s3 = |secret: &'static str| {
        vec![
            ("COPYDESK__FILES__STORE", "s3".to_owned()),
            ("COPYDESK__FILES__S3__BUCKET", "copydesk-files".to_owned()),
            ("COPYDESK__FILES__S3__ENDPOINT", endpoint.clone()),
            ("COPYDESK__FILES__S3__ALLOW_HTTP", "true".to_owned()),
            ("COPYDESK__FILES__S3__PREFIX", "copydesk/".to_owned()),
            ("AWS_ACCESS_KEY_ID", "copydesk-access".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
        ]
    };
    // The server runs on this test's runtime: the CLI is run from a blocking thread.
    let exec = |env: Vec<(&'static str, String)>, args: Vec<String>| {
        let db_url = db.url.clone();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            copydesk_at(&db_url, &env, &args)
        })
    };
    let put = vec![
        "files".to_owned(),
        "put".into(),
        photo.to_str().unwrap().into(),
        "--project".into(),
        project.to_string(),
    ];
    // A wrong secret: the server refuses the signature; nothing is recorded.
    let (ok, _, err) = exec(s3("not-the-secret"), put.clone()).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("the file store (bucket copydesk-files at http://127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM files").await, 0);

    let (ok, out, err) = exec(s3("copydesk-secret-key-1234"), put.clone())
        .await
        .unwrap();
    assert!(ok, "{err}");
    let id: Uuid = out.trim().parse().unwrap();
    let (ok, out, err) = exec(s3("copydesk-secret-key-1234"), put).await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), id.to_string());
    assert!(err.contains("was stored already"), "{err}");
    let objects = stored(&root.path().join("copydesk-files"));
    assert_eq!(objects.len(), 1, "{objects:?}");
    let sha = copydesk::files::sha256_hex(PNG);
    assert!(
        objects[0].ends_with(format!(
            "copydesk/tenants/{}/{sha}",
            copydesk::domain::DEFAULT_TENANT
        )),
        "{objects:?}"
    );
    assert_eq!(std::fs::read(&objects[0]).unwrap(), PNG);
    let copy = work.path().join("copy.png");
    let (ok, _, err) = exec(
        s3("copydesk-secret-key-1234"),
        vec![
            "files".into(),
            "get".into(),
            id.to_string(),
            "--output".into(),
            copy.to_str().unwrap().into(),
        ],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), PNG);
}
