//! Fetching a user-supplied URL (a store's website, a catalogue) without letting it
//! reach inside our network (SSRF).
//!
//! Every hop is checked: the scheme must be http(s) with no userinfo; the name is
//! resolved and *every* address must be public (loopback only when `[fetch]
//! allow_loopback` says so); the connection is pinned to the addresses we checked (the
//! check runs inside reqwest's resolver, so a DNS answer cannot change between check and
//! connect); literal-IP URLs, which reqwest sends past the resolver, are checked
//! separately; redirects are followed by hand and re-checked; proxies are ignored; the
//! body is capped while it streams, and the whole fetch has a time limit.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, LazyLock},
    time::Duration,
};

use ipnet::IpNet;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

use crate::config::FetchSettings;

/// Why a fetch was refused or failed. Refusals are permanent; the rest may be retried.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url} is not an http(s) URL we fetch: {why}")]
    BadUrl { url: String, why: String },
    #[error("refused to fetch {url}: {host} resolves to {addr}, a {kind} address")]
    Refused {
        url: String,
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("{url}: more than {0} redirects", .max)]
    TooManyRedirects { url: String, max: usize },
    #[error("{url}: the page is larger than {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {content_type} is not a content type we read here")]
    NotHtml { url: String, content_type: String },
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl FetchError {
    /// Whether trying again later could help (network trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// A fetched page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Where the page was found, after redirects.
    pub url: Url,
    pub body: String,
}

static DENY: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "reserved"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "unique-local (private)"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "documentation"),
    ]
    .into_iter()
    .map(|(net, kind)| (net.parse().expect("valid network"), kind))
    .collect()
});

/// The kind of a non-public address, or `None` when it may be fetched.
pub fn refused_kind(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    // Check the IPv4 address inside IPv4-mapped, -compatible and NAT64 IPv6 forms.
    let ip = match ip {
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || (seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
            {
                let o = v6.octets();
                IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else {
                ip
            }
        }
        v4 => v4,
    };
    if allow_loopback && ip.is_loopback() {
        return None;
    }
    DENY.iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, k)| *k)
}

/// A resolver that refuses names with any non-public address and returns only the
/// addresses it checked, so the connection goes where the check looked.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_loopback: bool,
}

/// The error a refused name carries through reqwest, recovered in [`Fetcher::get`].
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {addr}, a {kind} address")]
struct RefusedAddr {
    host: String,
    addr: IpAddr,
    kind: &'static str,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                if let Some(kind) = refused_kind(a.ip(), allow_loopback) {
                    return Err(Box::new(RefusedAddr {
                        host,
                        addr: a.ip(),
                        kind,
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Installs the TLS crypto provider (ring) once per process.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Fetches pages under the SSRF rules of this module.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    cfg: FetchSettings,
}

impl Fetcher {
    pub fn new(cfg: &FetchSettings) -> Self {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_loopback: cfg.allow_loopback,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .user_agent(concat!(
                "copydesk/",
                env!("CARGO_PKG_VERSION"),
                " (brand-voice analysis)"
            ))
            .build()
            .expect("HTTP client builds");
        Self {
            client,
            cfg: cfg.clone(),
        }
    }

    /// Checks a URL before any connection: scheme, userinfo, and literal IP addresses.
    pub fn check_url(&self, url: &str) -> Result<Url, FetchError> {
        let bad = |why: &str| FetchError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http and https are fetched"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("URLs with a user name or password are not fetched"));
        }
        // The URL parser has already turned 0x7f000001, 2130706433 and friends into
        // dotted addresses; reqwest does not resolve literal IPs, so check them here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(bad("no host")),
        };
        if let Some(addr) = literal
            && let Some(kind) = refused_kind(addr, self.cfg.allow_loopback)
        {
            return Err(FetchError::Refused {
                url: url.to_owned(),
                host: addr.to_string(),
                addr,
                kind,
            });
        }
        Ok(parsed)
    }

    /// POSTs a JSON body with `headers` (a webhook's delivery), through the same guard;
    /// a redirect is not followed. Returns the answer's status and the start of its body
    /// (at most 1,000 characters), whatever the status.
    pub async fn post_json(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(u16, String), FetchError> {
        let checked = self.check_url(url)?;
        let res = self
            .client
            .post(checked)
            .headers(headers)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                refusal(url, &e).unwrap_or_else(|| FetchError::Http {
                    url: url.to_owned(),
                    source: e,
                })
            })?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        Ok((status, text.chars().take(1000).collect()))
    }

    /// GETs an HTML page, following redirects by hand, each hop checked again.
    pub async fn get_html(&self, url: &str) -> Result<Page, FetchError> {
        self.get(
            url,
            &["text/html", "application/xhtml+xml"],
            &reqwest::header::HeaderMap::new(),
        )
        .await
    }

    /// GETs a JSON document (a catalogue API page) with `headers` (auth); the headers
    /// are dropped if a redirect leaves the URL's origin.
    pub async fn get_json(
        &self,
        url: &str,
        headers: &reqwest::header::HeaderMap,
    ) -> Result<serde_json::Value, FetchError> {
        let page = self
            .get(
                url,
                &["application/json", "application/", "text/json"],
                headers,
            )
            .await?;
        serde_json::from_str(&page.body).map_err(|e| FetchError::BadUrl {
            url: url.to_owned(),
            why: format!("the answer is not JSON: {e}"),
        })
    }

    async fn get(
        &self,
        url: &str,
        accept: &[&str],
        headers: &reqwest::header::HeaderMap,
    ) -> Result<Page, FetchError> {
        let mut current = self.check_url(url)?;
        let origin = current.origin();
        for _ in 0..=self.cfg.max_redirects {
            let u = current.to_string();
            let http = |source| FetchError::Http {
                url: u.clone(),
                source,
            };
            let mut req = self.client.get(current.clone());
            if current.origin() == origin {
                req = req.headers(headers.clone());
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) => return Err(refusal(&u, &e).unwrap_or_else(|| http(e))),
            };
            let status = res.status();
            if status.is_redirection() {
                let Some(loc) = res.headers().get(reqwest::header::LOCATION) else {
                    return Err(FetchError::Status {
                        url: u,
                        status: status.as_u16(),
                    });
                };
                let next = current
                    .join(loc.to_str().unwrap_or_default())
                    .map_err(|e| FetchError::BadUrl {
                        url: u.clone(),
                        why: format!("bad redirect: {e}"),
                    })?;
                current = self.check_url(next.as_str())?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: u,
                    status: status.as_u16(),
                });
            }
            let content_type = res
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(accept[0])
                .to_owned();
            if !accept.iter().any(|a| content_type.starts_with(a)) {
                return Err(FetchError::NotHtml {
                    url: u,
                    content_type,
                });
            }
            let max = self.cfg.max_bytes;
            if res.content_length().is_some_and(|n| n as usize > max) {
                return Err(FetchError::TooLarge { url: u, max });
            }
            let mut res = res;
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(http)? {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Err(FetchError::TooLarge { url: u, max });
                }
            }
            return Ok(Page {
                url: current,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Err(FetchError::TooManyRedirects {
            url: url.to_owned(),
            max: self.cfg.max_redirects,
        })
    }
}

/// Finds our resolver's refusal inside a reqwest error.
fn refusal(url: &str, e: &reqwest::Error) -> Option<FetchError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RefusedAddr>() {
            return Some(FetchError::Refused {
                url: url.to_owned(),
                host: r.host.clone(),
                addr: r.addr,
                kind: r.kind,
            });
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(allow_loopback: bool) -> Fetcher {
        let mut cfg = crate::config::Settings::defaults().fetch;
        cfg.allow_loopback = allow_loopback;
        Fetcher::new(&cfg)
    }

    #[test]
    fn literal_addresses_in_every_spelling_are_refused() {
        let f = fetcher(false);
        for url in [
            "http://127.0.0.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://192.168.1.1:8080/",
        ] {
            let err = f.check_url(url).unwrap_err();
            assert!(matches!(err, FetchError::Refused { .. }), "{url}: {err}");
        }
        assert!(f.check_url("https://93.184.215.14/").is_ok());
        assert!(matches!(
            f.check_url("file:///etc/passwd"),
            Err(FetchError::BadUrl { .. })
        ));
        assert!(matches!(
            f.check_url("http://u:p@example.com/"),
            Err(FetchError::BadUrl { .. })
        ));
    }

    #[test]
    fn loopback_only_when_allowed_and_never_private_or_metadata() {
        let f = fetcher(true);
        assert!(f.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(f.check_url("http://[::1]/").is_ok());
        assert!(f.check_url("http://10.0.0.1/").is_err());
        assert!(f.check_url("http://169.254.169.254/").is_err());
    }
}
