//! How the console draws things: a draft as its channel will show it, a diff between
//! two versions, the throughput chart (inline SVG), ages and amounts.

use chrono::{DateTime, Utc};
use maud::{Markup, PreEscaped, html};
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

use crate::{domain::Channel, publish::x::weighted_len};

/// Markdown as HTML with nothing active in it: raw HTML in the draft is shown as text,
/// and a link or image may only point at http(s), mailto or a relative address (a
/// draft is a model's output: it must not run in an editor's browser).
pub fn markdown(text: &str) -> Markup {
    fn safe(url: &str) -> bool {
        let lower = url.trim().to_ascii_lowercase();
        !lower.contains(':')
            || lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("mailto:")
    }
    let events =
        Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|e| {
            match e {
                Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
                Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }) if !safe(&dest_url) => Event::Start(Tag::Link {
                    link_type,
                    dest_url: CowStr::Borrowed("#"),
                    title,
                    id,
                }),
                Event::Start(Tag::Image {
                    link_type,
                    dest_url,
                    title,
                    id,
                }) if !safe(&dest_url) => Event::Start(Tag::Image {
                    link_type,
                    dest_url: CowStr::Borrowed("#"),
                    title,
                    id,
                }),
                other => other,
            }
        });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    PreEscaped(out)
}

/// How long ago `at` was, in words ("3 min", "2 h", "4 d").
pub fn age(at: DateTime<Utc>) -> String {
    let secs = (Utc::now() - at).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// A time as people read it.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A channel's or a subscription's last delivery: its status, the receiver's answer
/// status and when; "none yet" without one.
pub fn last_delivery(
    status: Option<impl std::fmt::Display>,
    code: Option<i32>,
    at: Option<DateTime<Utc>>,
) -> maud::Markup {
    maud::html! {
        @match (status, at) {
            (Some(s), Some(at)) => {
                span class={ "status " (s) } { (s) }
                @if let Some(code) = code { " (" (code) ")" }
                " · " (time(at))
            }
            _ => { "none yet" }
        }
    }
}

/// Dollars, to the cent below a dollar's hundredth.
pub fn usd(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// A draft as its channel shows it: a blog post rendered from Markdown; a post with its
/// length against the channel's limit (X counts weighted characters).
pub fn draft(channel: Option<Channel>, title: Option<&str>, content: &str) -> Markup {
    match channel {
        Some(Channel::Blog) => html! {
            article.blog {
                @if let Some(t) = title { p.blog-title { (t) } }
                (markdown(content))
            }
        },
        Some(c) => {
            let (used, what) = if c == Channel::X {
                (weighted_len(content), "weighted characters")
            } else {
                (content.chars().count(), "characters")
            };
            let max = c.max_chars();
            let over = max.is_some_and(|m| used > m);
            html! {
                article class={ "post " (c.as_str()) } {
                    p.post-channel { (channel_name(c)) }
                    div.post-text { (content) }
                    p class={ "count" @if over { " over" } } {
                        (used) @if let Some(m) = max { " / " (m) } " " (what)
                        @if over { " — over the limit: the platform would refuse it" }
                    }
                }
            }
        }
        None => html! { div.post-text { (content) } },
    }
}

/// A channel's name as people say it.
pub fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Blog => "Blog",
        Channel::Linkedin => "LinkedIn",
        Channel::X => "X",
        Channel::Facebook => "Facebook",
    }
}

/// The words that changed from `old` to `new`: removed ones struck, added ones marked.
pub fn diff(old: &str, new: &str) -> Markup {
    use similar::{ChangeTag, TextDiff};
    let d = TextDiff::from_words(old, new);
    let (mut added, mut removed) = (0, 0);
    let body = html! {
        @for change in d.iter_all_changes() {
            @match change.tag() {
                ChangeTag::Equal => { (change.value()) }
                ChangeTag::Delete => { del { (change.value()) } }
                ChangeTag::Insert => { ins { (change.value()) } }
            }
        }
    };
    for c in d.iter_all_changes() {
        match c.tag() {
            ChangeTag::Delete => removed += 1,
            ChangeTag::Insert => added += 1,
            ChangeTag::Equal => {}
        }
    }
    html! {
        p.hint { (added) " word(s) added, " (removed) " removed" }
        div.diff { (body) }
    }
}

/// Done and failed jobs per minute over the last hour, as bars (inline SVG).
pub fn chart(minutes: &[crate::store::console::Minute]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let now = Utc::now();
    let mut done = [0i64; 60];
    let mut failed = [0i64; 60];
    for m in minutes {
        let ago = (now - m.minute).num_minutes();
        if (0..60).contains(&ago) {
            let i = 59 - ago as usize;
            done[i] += m.done;
            failed[i] += m.failed;
        }
    }
    let peak = done
        .iter()
        .zip(&failed)
        .map(|(d, f)| d + f)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bar = W / 60.0;
    let total_done: i64 = done.iter().sum();
    let total_failed: i64 = failed.iter().sum();
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H + 16.0) } role="img"
                aria-label={ "Jobs per minute over the last hour: " (total_done) " done, " (total_failed) " failed" } {
                line x1="0" y1=(H) x2=(W) y2=(H) class="axis" {}
                @for i in 0..60 {
                    @let x = i as f64 * bar;
                    @let hd = done[i] as f64 / peak * (H - 4.0);
                    @let hf = failed[i] as f64 / peak * (H - 4.0);
                    @if done[i] > 0 {
                        rect class="done" x=(x + 1.0) y=(H - hd) width=(bar - 2.0) height=(hd) {
                            title { (done[i]) " done, " (60 - i) " min ago" }
                        }
                    }
                    @if failed[i] > 0 {
                        rect class="failed" x=(x + 1.0) y=(H - hd - hf) width=(bar - 2.0) height=(hf) {
                            title { (failed[i]) " failed, " (60 - i) " min ago" }
                        }
                    }
                }
                text x="0" y=(H + 14.0) { "60 min ago" }
                text x=(W) y=(H + 14.0) text-anchor="end" { "now" }
                text x=(W) y="12" text-anchor="end" { "peak " (peak as i64) "/min" }
            }
            figcaption {
                span.key.done { "done " (total_done) }
                " "
                span.key.failed { "failed " (total_failed) }
                " in the last hour"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_but_nothing_in_it_runs() {
        let html = markdown(
            "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) [ok](https://a.test) <img src=x onerror=alert(1)>",
        )
        .into_string();
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("href=\"https://a.test\""), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
    }

    #[test]
    fn an_x_post_counts_weighted_characters_against_280() {
        let long = "界".repeat(141); // each CJK character weighs 2
        let html = draft(Some(Channel::X), None, &long).into_string();
        assert!(html.contains("282 / 280 weighted characters"), "{html}");
        assert!(html.contains("over the limit"), "{html}");
        let ok = draft(Some(Channel::Linkedin), None, "hello").into_string();
        assert!(
            ok.contains("5 / 3000 characters") && !ok.contains("over"),
            "{ok}"
        );
    }

    #[test]
    fn a_diff_marks_what_changed() {
        let html = diff("the quick fox", "the slow fox").into_string();
        assert!(html.contains("<del>quick</del>"), "{html}");
        assert!(html.contains("<ins>slow</ins>"), "{html}");
    }
}
