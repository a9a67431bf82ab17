//! Email through an SMTP server (`[notifications.email]`): STARTTLS by default, the
//! login from `COPYDESK_SMTP_USERNAME` and `COPYDESK_SMTP_PASSWORD`, sent only over
//! TLS. Each send opens its own connection: notifications are few.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};

use crate::config::{EmailSettings, SmtpTls};

/// Why an email could not be sent. No variant carries the login.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("no SMTP server is configured: set [notifications.email] smtp_host")]
    NotConfigured,
    #[error("[notifications.email] {0}")]
    Settings(String),
    #[error("{0:?} is not an email address: {1}")]
    BadAddress(String, String),
    /// The server answered with a refusal; `transient` for a 4xx (try again later).
    #[error("the SMTP server {server} refused the email: {code} {message}")]
    Refused {
        server: String,
        code: u16,
        message: String,
        transient: bool,
    },
    /// No answer: unreachable, timed out, TLS failed.
    #[error("the SMTP server {server} could not be reached: {why}")]
    Unreachable { server: String, why: String },
}

impl MailError {
    /// Worth trying again later: the server was unreachable or refused for now.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused { transient, .. } => *transient,
            Self::Unreachable { .. } => true,
            _ => false,
        }
    }

    /// The server's reply code, when it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Parses an address as email channels take it (`ana@example.com` or
/// `Ana <ana@example.com>`).
pub fn parse_address(s: &str) -> Result<Mailbox, MailError> {
    s.trim()
        .parse()
        .map_err(|e: lettre::address::AddressError| {
            MailError::BadAddress(s.to_owned(), e.to_string())
        })
}

/// A connection recipe for the configured SMTP server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl Mailer {
    /// From the settings and the environment's login; `NotConfigured` without a host.
    pub fn new(s: &EmailSettings) -> Result<Self, MailError> {
        if s.smtp_host.trim().is_empty() {
            return Err(MailError::NotConfigured);
        }
        let host = s.smtp_host.trim();
        let from = s.from.parse().map_err(|e| {
            MailError::Settings(format!("from = {:?} is not an address: {e}", s.from))
        })?;
        let mut tls = TlsParameters::builder(host.to_owned());
        if !s.ca_file.is_empty() {
            let pem = std::fs::read(&s.ca_file).map_err(|e| {
                MailError::Settings(format!("ca_file {:?} cannot be read: {e}", s.ca_file))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                MailError::Settings(format!(
                    "ca_file {:?} holds no PEM certificate: {e}",
                    s.ca_file
                ))
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| MailError::Settings(format!("TLS for {host}: {e}")))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(s.smtp_port)
            .timeout(Some(Duration::from_secs(s.timeout_secs.max(1))))
            .tls(match s.tls {
                SmtpTls::Starttls => Tls::Required(tls),
                SmtpTls::Tls => Tls::Wrapper(tls),
                SmtpTls::None => Tls::None,
            });
        let user = std::env::var("COPYDESK_SMTP_USERNAME").unwrap_or_default();
        if !user.is_empty() {
            if s.tls == SmtpTls::None {
                return Err(MailError::Settings(
                    "tls = \"none\" with COPYDESK_SMTP_USERNAME set: the login would cross the \
                     network in the clear; use starttls or tls"
                        .into(),
                ));
            }
            let password = std::env::var("COPYDESK_SMTP_PASSWORD").unwrap_or_default();
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            server: format!("{host}:{}", s.smtp_port),
        })
    }

    /// Sends a plain-text email with a stable `Message-ID` (the same on every retry, so
    /// a receiver can tell a repeat); the server's reply code and words.
    pub async fn send(
        &self,
        to: &Mailbox,
        message_id: &str,
        subject: &str,
        body: String,
    ) -> Result<(u16, String), MailError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .message_id(Some(format!("<{message_id}@copydesk>")))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Settings(format!("the email cannot be built: {e}")))?;
        match self.transport.send(message).await {
            Ok(r) => Ok((
                u16::from(r.code()),
                r.message().collect::<Vec<_>>().join(" "),
            )),
            Err(e) => Err(match e.status() {
                Some(code) => MailError::Refused {
                    server: self.server.clone(),
                    code: u16::from(code),
                    message: refusal(&e),
                    transient: e.is_transient(),
                },
                None => MailError::Unreachable {
                    server: self.server.clone(),
                    why: refusal(&e),
                },
            }),
        }
    }
}

/// An error's words with its source chain (lettre puts the server's answer there).
fn refusal(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
