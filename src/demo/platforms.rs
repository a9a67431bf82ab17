//! Local stand-ins for the five platforms, speaking their real protocols: the same
//! paths, methods, auth headers and body shapes, answering with the real response and
//! error shapes (WordPress REST v2, Shopify Admin REST, LinkedIn Posts, X API v2,
//! Facebook Graph). `copydesk demo` publishes to them, and the tests drive them: they
//! keep every post (with the time they made it), check every request as the platform
//! would, and can be told to throttle, revoke a token, hold an answer back, lose an
//! answer after keeping the post, or fail before keeping it. Nothing in `publish/`
//! knows they exist.
//!
//! Each platform lives under its own prefix (`/wordpress`, `/shopify`, `/linkedin`,
//! `/x`, `/facebook`); an integration reaches it through metadata `api_base` (WordPress:
//! `site_url`). [`FakePlatforms::integration`] gives matching credentials and metadata.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde_json::{Value, json};

use crate::domain::Platform;

const WP_USER: &str = "editor";
const WP_PASSWORD: &str = "abcd efgh ijkl mnop qrst uvwx";
const SHOPIFY_TOKEN: &str = "shpat_fake_0123456789abcdef";
const LINKEDIN_TOKEN: &str = "AQX-fake-linkedin-member-token";
const X_CLIENT: &str = "fake-x-client-id";
const FB_TOKEN: &str = "EAAB-fake-page-access-token";
const FB_PAGE: &str = "104857600000001";
const BLOG_ID: i64 = 241_253_187;

/// A post a fake platform holds.
#[derive(Debug, Clone)]
pub struct FakePost {
    pub platform: Platform,
    pub id: String,
    /// The title (WordPress, Shopify) or the text as the platform shows it.
    pub text: String,
    pub body: String,
    pub slug: Option<String>,
    pub status: String,
    pub scheduled_for: Option<i64>,
    /// When the platform made it (Unix seconds, this machine's clock).
    pub created: i64,
    /// Its picture: WordPress's featured media id, or Shopify's article image
    /// (`<filename>, <bytes> bytes`).
    pub image: Option<String>,
}

/// An item of WordPress's media library.
#[derive(Debug, Clone)]
pub struct FakeMedia {
    pub id: i64,
    pub slug: String,
    pub file_name: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    posts: Vec<FakePost>,
    media: Vec<FakeMedia>,
    next_id: u64,
    requests: Vec<String>,
    throttle: HashMap<Platform, u32>,
    revoked: HashSet<Platform>,
    hold: Option<Duration>,
    /// Create calls keep the post, then answer 502 (the answer is lost to the caller).
    lose_answers: HashSet<Platform>,
    /// Create calls answer 502 without keeping the post (the gateway failed first).
    drop_creates: HashSet<Platform>,
    /// Reads (GET) are refused with 403, as without the read scopes.
    deny_reads: HashSet<Platform>,
    /// X's current OAuth 2.0 pair (rotated on refresh).
    x_access: String,
    x_refresh: String,
}

/// The running fakes.
pub struct FakePlatforms {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePlatforms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePlatforms {
    /// Starts the fakes on a loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            next_id: 1,
            x_access: "x-fake-access-1".into(),
            x_refresh: "x-fake-refresh-1".into(),
            ..State::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let s = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(s, addr, method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    pub fn url(&self, platform: Platform) -> String {
        format!("http://{}/{}", self.addr, platform.as_str())
    }

    /// Credentials and metadata that this fake accepts for `platform`.
    pub fn integration(&self, platform: Platform) -> (Value, Value) {
        let base = self.url(platform);
        match platform {
            Platform::Wordpress => (
                json!({"username": WP_USER, "application_password": WP_PASSWORD}),
                json!({"site_url": base}),
            ),
            Platform::Shopify => (
                json!({"access_token": SHOPIFY_TOKEN}),
                json!({"shop_domain": "linen-and-loom.myshopify.com", "blog_id": BLOG_ID, "api_version": "2026-10", "api_base": base}),
            ),
            Platform::Linkedin => (
                json!({"access_token": LINKEDIN_TOKEN}),
                json!({"author_urn": "urn:li:organization:5515715", "api_version": "202610", "api_base": base}),
            ),
            Platform::X => {
                let s = self.state.lock().expect("not poisoned");
                (
                    json!({"access_token": s.x_access, "refresh_token": s.x_refresh, "client_id": X_CLIENT}),
                    json!({"username": "linenandloom", "api_base": base}),
                )
            }
            Platform::Facebook => (
                json!({"page_access_token": FB_TOKEN}),
                json!({"page_id": FB_PAGE, "graph_version": "v25.0", "api_base": base}),
            ),
        }
    }

    /// WordPress's media library, in order of upload.
    pub fn media(&self) -> Vec<FakeMedia> {
        self.state.lock().expect("not poisoned").media.clone()
    }

    /// Every post the fakes hold, in order.
    pub fn posts(&self) -> Vec<FakePost> {
        self.state.lock().expect("not poisoned").posts.clone()
    }

    pub fn posts_on(&self, platform: Platform) -> Vec<FakePost> {
        self.posts()
            .into_iter()
            .filter(|p| p.platform == platform)
            .collect()
    }

    /// "METHOD /path" of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("not poisoned").requests.clone()
    }

    // The controls below make a platform misbehave. Tests use them; the product binary
    // has none of them (the `stand-in-controls` feature, which only the tests enable).

    /// The next `n` create calls to `platform` are rate limited.
    #[cfg(feature = "stand-in-controls")]
    pub fn throttle(&self, platform: Platform, n: u32) {
        self.state
            .lock()
            .expect("not poisoned")
            .throttle
            .insert(platform, n);
    }

    /// Every call to `platform` is refused as unauthorised (a revoked token).
    #[cfg(feature = "stand-in-controls")]
    pub fn revoke(&self, platform: Platform) {
        self.state
            .lock()
            .expect("not poisoned")
            .revoked
            .insert(platform);
    }

    /// X's access token expires now: only a refresh brings a working one.
    #[cfg(feature = "stand-in-controls")]
    pub fn expire_x_token(&self) {
        let mut s = self.state.lock().expect("not poisoned");
        s.x_access = format!("x-fake-access-{}-unissued", s.next_id);
    }

    /// Create calls to `platform` keep the post, then answer 502 Bad Gateway.
    #[cfg(feature = "stand-in-controls")]
    pub fn lose_answers(&self, platform: Platform, on: bool) {
        let mut s = self.state.lock().expect("not poisoned");
        if on {
            s.lose_answers.insert(platform);
        } else {
            s.lose_answers.remove(&platform);
        }
    }

    /// Create calls to `platform` answer 502 Bad Gateway without keeping the post.
    #[cfg(feature = "stand-in-controls")]
    pub fn drop_creates(&self, platform: Platform, on: bool) {
        let mut s = self.state.lock().expect("not poisoned");
        if on {
            s.drop_creates.insert(platform);
        } else {
            s.drop_creates.remove(&platform);
        }
    }

    /// GET calls to `platform` are refused with 403 (no read permission).
    #[cfg(feature = "stand-in-controls")]
    pub fn deny_reads(&self, platform: Platform) {
        self.state
            .lock()
            .expect("not poisoned")
            .deny_reads
            .insert(platform);
    }

    /// Create calls keep the post, then wait this long before answering.
    #[cfg(feature = "stand-in-controls")]
    pub fn hold_answers(&self, d: Option<Duration>) {
        self.state.lock().expect("not poisoned").hold = d;
    }
}

fn problem(status: u16, body: Value) -> Response {
    let mut res = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    if status == 429 {
        res.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    res
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let (platform, rest) = match path.trim_start_matches('/').split_once('/') {
        Some((p, rest)) => match p.parse::<Platform>() {
            Ok(p) => (p, format!("/{rest}")),
            Err(_) => return problem(404, json!({"error": "no such platform"})),
        },
        None => return problem(404, json!({"error": "no such platform"})),
    };
    let is_create = method == Method::POST && !rest.ends_with("/oauth2/token");
    let hold = {
        let mut s = state.lock().expect("not poisoned");
        s.requests.push(format!("{method} {path}"));
        if is_create && let Some(n) = s.throttle.get_mut(&platform).filter(|n| **n > 0) {
            *n -= 1;
            return throttled(platform);
        }
        if s.revoked.contains(&platform) {
            return unauthorised(platform);
        }
        if method == Method::GET && s.deny_reads.contains(&platform) {
            return problem(
                403,
                json!({"status": 403, "serviceErrorCode": 100, "code": "ACCESS_DENIED",
                       "message": "Not enough permissions to access: partnerApiPostsExternal.FINDER-author"}),
            );
        }
        if is_create && s.drop_creates.contains(&platform) {
            return bad_gateway();
        }
        (s.hold, s.lose_answers.contains(&platform))
    };
    let (hold, lose) = hold;
    let res = match platform {
        Platform::Wordpress => wordpress(&state, addr, &method, &rest, &uri, &headers, &body),
        Platform::Shopify => shopify(&state, &method, &rest, &uri, &headers, &body),
        Platform::Linkedin => linkedin(&state, &method, &rest, &uri, &headers, &body),
        Platform::X => x(&state, &method, &rest, &uri, &headers, &body),
        Platform::Facebook => facebook(&state, &method, &rest, &uri, &headers, &body),
    };
    if is_create
        && res.status().is_success()
        && let Some(d) = hold
    {
        tokio::time::sleep(d).await;
    }
    if is_create && res.status().is_success() && lose {
        return bad_gateway();
    }
    res
}

fn bad_gateway() -> Response {
    let mut bad = (
        StatusCode::BAD_GATEWAY,
        "<html><body>502 Bad Gateway</body></html>",
    )
        .into_response();
    bad.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    bad
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(t: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.to_rfc3339())
}

fn throttled(platform: Platform) -> Response {
    match platform {
        Platform::Facebook => {
            let mut res = problem(
                400,
                json!({"error": {"message": "(#32) Page request limit reached", "type": "OAuthException", "code": 32, "fbtrace_id": "AbCdEf"}}),
            );
            res.headers_mut().insert(
                "x-business-use-case-usage",
                HeaderValue::from_static(
                    r#"{"104857600000001":[{"type":"pages","call_count":100,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":0}]}"#,
                ),
            );
            res
        }
        Platform::X => problem(
            429,
            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
        ),
        Platform::Shopify => problem(
            429,
            json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}),
        ),
        Platform::Linkedin => problem(
            429,
            json!({"status": 429, "code": "TOO_MANY_REQUESTS", "message": "Resource level throttle APPLICATION DAY limit for calls to this resource is reached."}),
        ),
        Platform::Wordpress => problem(
            429,
            json!({"code": "too_many_requests", "message": "Too many requests.", "data": {"status": 429}}),
        ),
    }
}

fn unauthorised(platform: Platform) -> Response {
    match platform {
        Platform::Wordpress => problem(
            401,
            json!({"code": "rest_not_logged_in", "message": "You are not currently logged in.", "data": {"status": 401}}),
        ),
        Platform::Shopify => problem(
            401,
            json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
        ),
        Platform::Linkedin => problem(
            401,
            json!({"status": 401, "serviceErrorCode": 65601, "code": "REVOKED_ACCESS_TOKEN", "message": "The token used in the request has been revoked by the user"}),
        ),
        Platform::X => problem(
            401,
            json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}),
        ),
        Platform::Facebook => problem(
            400,
            json!({"error": {"message": "Error validating access token: The session has been invalidated because the user changed their password.", "type": "OAuthException", "code": 190, "error_subcode": 460, "fbtrace_id": "AbCdEf"}}),
        ),
    }
}

fn json_body(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn next_id(s: &mut State) -> u64 {
    s.next_id += 1;
    s.next_id
}

fn wordpress(
    state: &Mutex<State>,
    addr: SocketAddr,
    method: &Method,
    rest: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WP_USER}:{WP_PASSWORD}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return unauthorised(Platform::Wordpress);
    }
    let post_json = |p: &FakePost| {
        json!({
            "id": p.id.parse::<i64>().unwrap_or(0),
            "slug": p.slug,
            "status": p.status,
            "date_gmt": chrono::DateTime::from_timestamp(p.scheduled_for.unwrap_or(p.created), 0).map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string()),
            "link": format!("http://{addr}/wordpress/{}/", p.slug.clone().unwrap_or_default()),
            "title": {"raw": p.text, "rendered": p.text},
            "content": {"raw": p.body, "rendered": p.body},
            "featured_media": p.image.as_deref().and_then(|i| i.parse::<i64>().ok()).unwrap_or(0),
        })
    };
    let media_json = |m: &FakeMedia| {
        json!({
            "id": m.id,
            "slug": m.slug,
            "status": "inherit",
            "type": "attachment",
            "media_type": if m.mime_type.starts_with("image/") { "image" } else { "file" },
            "mime_type": m.mime_type,
            "title": {"raw": m.slug, "rendered": m.slug},
            "source_url": format!("http://{addr}/wordpress/wp-content/uploads/{}", m.file_name),
            "link": format!("http://{addr}/wordpress/{}/", m.slug),
        })
    };
    let mut s = state.lock().expect("not poisoned");
    match (method.as_str(), rest) {
        ("GET", "/wp-json/wp/v2/users/me") => {
            axum::Json(json!({"id": 1, "name": "Editor", "slug": WP_USER})).into_response()
        }
        ("GET", "/wp-json/wp/v2/posts") => {
            let q = query(uri);
            let slug = q.get("slug").cloned().unwrap_or_default();
            let found: Vec<Value> = s
                .posts
                .iter()
                .filter(|p| {
                    p.platform == Platform::Wordpress && p.slug.as_deref() == Some(slug.as_str())
                })
                .map(post_json)
                .collect();
            axum::Json(Value::Array(found)).into_response()
        }
        ("GET", "/wp-json/wp/v2/media") => {
            let slug = query(uri).get("slug").cloned().unwrap_or_default();
            let found: Vec<Value> = s
                .media
                .iter()
                .filter(|m| m.slug == slug)
                .map(media_json)
                .collect();
            axum::Json(Value::Array(found)).into_response()
        }
        ("POST", "/wp-json/wp/v2/media") => {
            // The file is the raw body; its name comes from Content-Disposition, its
            // other fields (slug, title, alt_text) from the query string.
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let Some(file_name) = header("content-disposition").and_then(|d| {
                d.split(';')
                    .find_map(|p| p.trim().strip_prefix("filename="))
                    .map(|f| f.trim_matches('"').to_owned())
            }) else {
                return problem(
                    400,
                    json!({"code": "rest_upload_no_content_disposition", "message": "No Content-Disposition supplied.", "data": {"status": 400}}),
                );
            };
            let Some(mime_type) = header("content-type").map(str::to_owned) else {
                return problem(
                    400,
                    json!({"code": "rest_upload_no_content_type", "message": "No Content-Type supplied.", "data": {"status": 400}}),
                );
            };
            if body.is_empty() {
                return problem(
                    400,
                    json!({"code": "rest_upload_no_data", "message": "No data supplied.", "data": {"status": 400}}),
                );
            }
            let q = query(uri);
            let base = q.get("slug").cloned().unwrap_or_else(|| {
                file_name
                    .rsplit_once('.')
                    .map_or(file_name.clone(), |(b, _)| b.to_owned())
            });
            let (mut slug, mut n) = (base.clone(), 2);
            while s.media.iter().any(|m| m.slug == slug) {
                slug = format!("{base}-{n}");
                n += 1;
            }
            let m = FakeMedia {
                id: next_id(&mut s) as i64,
                slug,
                file_name,
                mime_type,
                bytes: body.to_vec(),
            };
            let answer = media_json(&m);
            s.media.push(m);
            created(answer)
        }
        ("POST", "/wp-json/wp/v2/posts") => {
            let Some(b) = json_body(body) else {
                return problem(
                    400,
                    json!({"code": "rest_invalid_json", "message": "Invalid JSON body passed.", "data": {"status": 400}}),
                );
            };
            let title = b["title"].as_str().unwrap_or_default().to_owned();
            let status = b["status"].as_str().unwrap_or("draft").to_owned();
            if !matches!(
                status.as_str(),
                "publish" | "future" | "draft" | "pending" | "private"
            ) {
                return problem(
                    400,
                    json!({"code": "rest_invalid_param", "message": "Invalid parameter(s): status", "data": {"status": 400, "params": {"status": "status is not one of publish, future, draft, pending, private."}}}),
                );
            }
            let date = b["date_gmt"]
                .as_str()
                .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%dT%H:%M:%S").ok());
            if b.get("date_gmt").is_some() && date.is_none() {
                return problem(
                    400,
                    json!({"code": "rest_invalid_param", "message": "Invalid parameter(s): date_gmt", "data": {"status": 400}}),
                );
            }
            let featured = b["featured_media"].as_i64().filter(|id| *id != 0);
            if featured.is_some_and(|id| !s.media.iter().any(|m| m.id == id)) {
                return problem(
                    400,
                    json!({"code": "rest_invalid_featured_media", "message": "Invalid featured media ID.", "data": {"status": 400}}),
                );
            }
            let scheduled = date.map(|d| d.and_utc().timestamp());
            let status = match (status.as_str(), scheduled) {
                ("publish", Some(t)) if t > chrono::Utc::now().timestamp() => "future".to_owned(),
                ("future", Some(t)) if t <= chrono::Utc::now().timestamp() => "publish".to_owned(),
                _ => status,
            };
            let mut slug = b["slug"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| title.to_lowercase().replace(' ', "-"));
            let mut n = 2;
            let base = slug.clone();
            while s.posts.iter().any(|p| {
                p.platform == Platform::Wordpress && p.slug.as_deref() == Some(slug.as_str())
            }) {
                slug = format!("{base}-{n}");
                n += 1;
            }
            let id = next_id(&mut s);
            let post = FakePost {
                platform: Platform::Wordpress,
                id: id.to_string(),
                text: title,
                body: b["content"].as_str().unwrap_or_default().to_owned(),
                slug: Some(slug),
                status,
                scheduled_for: scheduled,
                created: now(),
                image: featured.map(|id| id.to_string()),
            };
            let answer = post_json(&post);
            s.posts.push(post);
            created(answer)
        }
        _ => problem(
            404,
            json!({"code": "rest_no_route", "message": "No route was found matching the URL and request method.", "data": {"status": 404}}),
        ),
    }
}

fn shopify(
    state: &Mutex<State>,
    method: &Method,
    rest: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(SHOPIFY_TOKEN)
    {
        return unauthorised(Platform::Shopify);
    }
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    // admin / api / {version} / blogs / {id}.json | {id} / articles.json
    if parts.len() < 5 || parts[0] != "admin" || parts[1] != "api" || parts[3] != "blogs" {
        return problem(404, json!({"errors": "Not Found"}));
    }
    let version_ok = parts[2].len() == 7 && parts[2].as_bytes()[4] == b'-';
    if !version_ok {
        return problem(404, json!({"errors": "Not Found"}));
    }
    let article_json = |p: &FakePost| {
        json!({
            "id": p.id.parse::<i64>().unwrap_or(0),
            "blog_id": BLOG_ID,
            "title": p.text,
            "handle": p.slug,
            "body_html": p.body,
            "published_at": p.scheduled_for.and_then(rfc3339),
            "created_at": rfc3339(p.created),
            "image": p.image.as_ref().map(|i| json!({"src": format!("https://cdn.shopify.com/s/files/1/{i}")})),
        })
    };
    let mut s = state.lock().expect("not poisoned");
    let mut res = match (method.as_str(), parts.len(), parts[4]) {
        ("GET", 5, blog) if blog == format!("{BLOG_ID}.json") => {
            axum::Json(json!({"blog": {"id": BLOG_ID, "handle": "journal", "title": "Journal"}}))
                .into_response()
        }
        (_, 6, blog) if blog == BLOG_ID.to_string() && parts[5] == "articles.json" => {
            if *method == Method::GET {
                let handle = query(uri).get("handle").cloned();
                let found: Vec<Value> = s
                    .posts
                    .iter()
                    .filter(|p| {
                        p.platform == Platform::Shopify && (handle.is_none() || p.slug == handle)
                    })
                    .map(article_json)
                    .collect();
                axum::Json(json!({"articles": found})).into_response()
            } else {
                let Some(a) = json_body(body)
                    .map(|b| b["article"].clone())
                    .filter(|a| a.is_object())
                else {
                    return problem(
                        400,
                        json!({"errors": {"article": "Required parameter missing or invalid"}}),
                    );
                };
                let title = a["title"].as_str().unwrap_or_default().to_owned();
                if title.is_empty() {
                    return problem(422, json!({"errors": {"title": ["can't be blank"]}}));
                }
                let mut handle = a["handle"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| title.to_lowercase().replace(' ', "-"));
                if s.posts.iter().any(|p| {
                    p.platform == Platform::Shopify && p.slug.as_deref() == Some(handle.as_str())
                }) {
                    handle = format!("{handle}-1");
                }
                let at = a["published_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|d| d.timestamp())
                    .or_else(|| Some(chrono::Utc::now().timestamp()));
                // An article's image: base64 `attachment` with a `filename`, or a `src`.
                let image = match &a["image"] {
                    Value::Null => None,
                    img => match (img["attachment"].as_str(), img["src"].as_str()) {
                        (Some(b64), _) => {
                            use base64::Engine;
                            match base64::engine::general_purpose::STANDARD.decode(b64) {
                                Ok(bytes) if !bytes.is_empty() => Some(format!(
                                    "{}, {} bytes",
                                    img["filename"].as_str().unwrap_or("image"),
                                    bytes.len()
                                )),
                                _ => {
                                    return problem(
                                        422,
                                        json!({"errors": {"image": ["Image attachment is invalid"]}}),
                                    );
                                }
                            }
                        }
                        (None, Some(src)) => Some(src.to_owned()),
                        (None, None) => {
                            return problem(
                                422,
                                json!({"errors": {"image": ["Image must have an attachment or a src"]}}),
                            );
                        }
                    },
                };
                let id = 9_000_000 + next_id(&mut s);
                let post = FakePost {
                    platform: Platform::Shopify,
                    id: id.to_string(),
                    text: title,
                    body: a["body_html"].as_str().unwrap_or_default().to_owned(),
                    slug: Some(handle),
                    status: "published".into(),
                    scheduled_for: at,
                    created: now(),
                    image,
                };
                let answer = article_json(&post);
                s.posts.push(post);
                created(json!({"article": answer}))
            }
        }
        _ => problem(404, json!({"errors": "Not Found"})),
    };
    res.headers_mut().insert(
        "x-shopify-shop-api-call-limit",
        HeaderValue::from_static("1/40"),
    );
    res
}

/// LinkedIn's little-text, read back: unescape, and stop at the first unescaped
/// reserved character, as LinkedIn silently does.
fn little_text_read(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '{' if s.contains("{hashtag|") => {
                let inner: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let tag = inner.rsplit('|').next().unwrap_or_default();
                out.push('#');
                out.push_str(tag);
            }
            '|' | '{' | '}' | '@' | '[' | ']' | '(' | ')' | '<' | '>' | '#' | '*' | '_' | '~' => {
                break;
            }
            other => out.push(other),
        }
    }
    out
}

fn linkedin(
    state: &Mutex<State>,
    method: &Method,
    rest: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if bearer(headers) != Some(LINKEDIN_TOKEN) {
        return problem(
            401,
            json!({"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN", "message": "Invalid access token"}),
        );
    }
    if rest == "/v2/userinfo" && *method == Method::GET {
        return axum::Json(
            json!({"sub": "782bbtaQ", "name": "Linen & Loom", "email_verified": true}),
        )
        .into_response();
    }
    if rest != "/rest/posts" {
        return problem(
            404,
            json!({"status": 404, "code": "NOT_FOUND", "message": "Not Found"}),
        );
    }
    let version = headers
        .get("linkedin-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if version.len() != 6 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return problem(
            426,
            json!({"status": 426, "code": "NONEXISTENT_VERSION", "message": format!("Requested version {version} is not active")}),
        );
    }
    if headers
        .get("x-restli-protocol-version")
        .and_then(|v| v.to_str().ok())
        != Some("2.0.0")
    {
        return problem(
            400,
            json!({"status": 400, "message": "Restli protocol version 2.0.0 is required"}),
        );
    }
    let mut s = state.lock().expect("not poisoned");
    if *method == Method::GET {
        let q = query(uri);
        if q.get("q").map(String::as_str) != Some("author") {
            return problem(
                400,
                json!({"status": 400, "message": "q=author is required"}),
            );
        }
        let elements: Vec<Value> = s
            .posts
            .iter()
            .rev()
            .filter(|p| p.platform == Platform::Linkedin)
            .map(|p| json!({"id": p.id, "author": q.get("author"), "commentary": p.body, "lifecycleState": "PUBLISHED", "createdAt": p.created * 1000}))
            .collect();
        return axum::Json(json!({"elements": elements, "paging": {"start": 0, "count": 10}}))
            .into_response();
    }
    let Some(b) = json_body(body) else {
        return problem(400, json!({"status": 400, "message": "Invalid JSON"}));
    };
    for field in [
        "author",
        "commentary",
        "visibility",
        "distribution",
        "lifecycleState",
    ] {
        if b.get(field).is_none() {
            return problem(
                422,
                json!({"status": 422, "message": format!("/{field} is required"), "errorDetails": {"inputErrors": [{"input": {"inputPath": {"fieldPath": field}}, "code": "FIELD_REQUIRED"}]}}),
            );
        }
    }
    let commentary = b["commentary"].as_str().unwrap_or_default();
    if commentary.chars().count() > 3000 {
        return problem(
            400,
            json!({"status": 400, "message": "ShareCommentary text length exceeded"}),
        );
    }
    let id = format!("urn:li:share:{}", 7_100_000_000_000u64 + next_id(&mut s));
    s.posts.push(FakePost {
        platform: Platform::Linkedin,
        id: id.clone(),
        text: little_text_read(commentary),
        body: commentary.to_owned(),
        slug: None,
        status: "PUBLISHED".into(),
        scheduled_for: None,
        created: now(),
        image: None,
    });
    let mut res = StatusCode::CREATED.into_response();
    res.headers_mut()
        .insert("x-restli-id", HeaderValue::from_str(&id).expect("ascii"));
    res
}

fn x(
    state: &Mutex<State>,
    method: &Method,
    rest: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut s = state.lock().expect("not poisoned");
    if rest == "/2/oauth2/token" && *method == Method::POST {
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some("refresh_token")
            || form.get("client_id").map(String::as_str) != Some(X_CLIENT)
            || form.get("refresh_token") != Some(&s.x_refresh)
        {
            return problem(
                400,
                json!({"error": "invalid_request", "error_description": "Value passed for the token was invalid."}),
            );
        }
        let n = next_id(&mut s);
        s.x_access = format!("x-fake-access-{n}");
        s.x_refresh = format!("x-fake-refresh-{n}");
        return axum::Json(json!({"token_type": "bearer", "expires_in": 7200, "access_token": s.x_access, "scope": "tweet.write tweet.read users.read offline.access", "refresh_token": s.x_refresh})).into_response();
    }
    if bearer(headers) != Some(s.x_access.as_str()) {
        return unauthorised(Platform::X);
    }
    const USER: &str = "2244994945";
    match (method.as_str(), rest) {
        ("GET", "/2/users/me") => axum::Json(
            json!({"data": {"id": USER, "name": "Linen & Loom", "username": "linenandloom"}}),
        )
        .into_response(),
        ("GET", r) if r == format!("/2/users/{USER}/tweets") => {
            let q = query(uri);
            let max: usize = q
                .get("max_results")
                .and_then(|m| m.parse().ok())
                .unwrap_or(10);
            // X returns created_at only when asked for it.
            let with_created = q
                .get("tweet.fields")
                .is_some_and(|f| f.split(',').any(|f| f == "created_at"));
            let data: Vec<Value> = s
                .posts
                .iter()
                .rev()
                .filter(|p| p.platform == Platform::X)
                .take(max)
                .map(|p| {
                    let mut t =
                        json!({"id": p.id, "text": p.text, "edit_history_tweet_ids": [p.id]});
                    if with_created {
                        t["created_at"] = json!(rfc3339(p.created));
                    }
                    t
                })
                .collect();
            axum::Json(json!({"data": data, "meta": {"result_count": data.len()}})).into_response()
        }
        ("POST", "/2/tweets") => {
            let Some(text) = json_body(body).and_then(|b| b["text"].as_str().map(str::to_owned))
            else {
                return problem(
                    400,
                    json!({"title": "Invalid Request", "detail": "One or more parameters to your request was invalid.", "type": "https://api.twitter.com/2/problems/invalid-request"}),
                );
            };
            if crate::publish::x::weighted_len(&text) > 280 {
                return problem(
                    400,
                    json!({"title": "Invalid Request", "detail": "Your Tweet text is too long.", "type": "https://api.twitter.com/2/problems/invalid-request"}),
                );
            }
            if s.posts
                .iter()
                .any(|p| p.platform == Platform::X && p.text == text)
            {
                return problem(
                    403,
                    json!({"title": "Forbidden", "detail": "You are not allowed to create a Tweet with duplicate content.", "type": "about:blank", "status": 403}),
                );
            }
            let id = (1_445_880_548_472_328_192u64 + next_id(&mut s)).to_string();
            s.posts.push(FakePost {
                platform: Platform::X,
                id: id.clone(),
                text: text.clone(),
                body: text.clone(),
                slug: None,
                status: "published".into(),
                scheduled_for: None,
                created: now(),
                image: None,
            });
            created(json!({"data": {"id": id, "text": text, "edit_history_tweet_ids": [id]}}))
        }
        _ => problem(
            404,
            json!({"title": "Not Found Error", "type": "https://api.twitter.com/2/problems/resource-not-found", "status": 404}),
        ),
    }
}

fn facebook(
    state: &Mutex<State>,
    method: &Method,
    rest: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let bad_token = || unauthorised(Platform::Facebook);
    if query(uri).contains_key("access_token") {
        return problem(
            400,
            json!({"error": {"message": "copydesk fake: access tokens belong in the body or the Authorization header, not the URL", "type": "OAuthException", "code": 100}}),
        );
    }
    if parts.len() < 2 || !parts[0].starts_with('v') || parts[1] != FB_PAGE {
        return problem(
            400,
            json!({"error": {"message": "Unsupported request - method type: get", "type": "GraphMethodException", "code": 100}}),
        );
    }
    let mut s = state.lock().expect("not poisoned");
    match (method.as_str(), parts.get(2).copied()) {
        ("POST", Some("feed")) => {
            let form: BTreeMap<String, String> =
                url::form_urlencoded::parse(body).into_owned().collect();
            if form.get("access_token").map(String::as_str) != Some(FB_TOKEN) {
                return bad_token();
            }
            let Some(message) = form.get("message").cloned() else {
                return problem(
                    400,
                    json!({"error": {"message": "(#100) Missing message or attachment", "type": "OAuthException", "code": 100}}),
                );
            };
            let scheduled = form
                .get("scheduled_publish_time")
                .and_then(|t| t.parse::<i64>().ok());
            if let Some(t) = scheduled {
                let ahead = t - chrono::Utc::now().timestamp();
                if !(600..=30 * 86_400).contains(&ahead)
                    || form.get("published").map(String::as_str) != Some("false")
                {
                    return problem(
                        400,
                        json!({"error": {"message": "(#100) The specified scheduled publish time is invalid.", "type": "OAuthException", "code": 100}}),
                    );
                }
            }
            if s.posts
                .iter()
                .any(|p| p.platform == Platform::Facebook && p.text == message)
            {
                return problem(
                    400,
                    json!({"error": {"message": "Duplicate status message", "type": "FacebookApiException", "code": 506, "error_subcode": 1455006, "fbtrace_id": "AbCdEf"}}),
                );
            }
            let id = format!("{FB_PAGE}_{}", 122_000_000_000u64 + next_id(&mut s));
            s.posts.push(FakePost {
                platform: Platform::Facebook,
                id: id.clone(),
                text: message.clone(),
                body: message,
                slug: None,
                status: if scheduled.is_some() {
                    "scheduled"
                } else {
                    "published"
                }
                .into(),
                scheduled_for: scheduled,
                created: now(),
                image: None,
            });
            axum::Json(json!({"id": id})).into_response()
        }
        ("GET", edge) => {
            if bearer(headers) != Some(FB_TOKEN) {
                return bad_token();
            }
            match edge {
                None => axum::Json(json!({"id": FB_PAGE, "name": "Linen & Loom"})).into_response(),
                Some(e @ ("feed" | "scheduled_posts")) => {
                    let want_scheduled = e == "scheduled_posts";
                    let data: Vec<Value> = s
                        .posts
                        .iter()
                        .rev()
                        .filter(|p| {
                            p.platform == Platform::Facebook
                                && (p.status == "scheduled") == want_scheduled
                        })
                        .map(|p| {
                            let created = chrono::DateTime::from_timestamp(p.created, 0)
                                .map(|d| d.format("%Y-%m-%dT%H:%M:%S%z").to_string());
                            json!({"id": p.id, "message": p.text, "created_time": created})
                        })
                        .collect();
                    axum::Json(json!({"data": data})).into_response()
                }
                Some(_) => problem(
                    400,
                    json!({"error": {"message": "Unknown path components", "type": "OAuthException", "code": 2500}}),
                ),
            }
        }
        _ => problem(
            400,
            json!({"error": {"message": "Unsupported request", "type": "GraphMethodException", "code": 100}}),
        ),
    }
}
