//! The `offline` provider: deterministic text written from a call's structured inputs
//! (`Call::hints`), with no model and no network, so the whole pipeline runs with no
//! key. Every reply says `offline` as its provider and model; its token counts are word
//! counts and it costs nothing.
//!
//! It is honest about quality in one way that matters for the pipeline: the reviewer
//! asks for a concrete example when a draft has none, and the writer adds one when it
//! gets that feedback, so the evaluation loop really runs a second iteration.

use serde_json::{Value, json};

use super::{AgentConfig, Call, OFFLINE, Reply};

/// What the offline reviewer asks for, and the writer answers.
pub const EXAMPLE_FEEDBACK: &str = "Add a concrete example that shows the product in use.";
const EXAMPLE_MARK: &str = "For example,";

pub fn reply(agent: &AgentConfig, call: &Call) -> Reply {
    let h = &call.hints;
    let (text, json) = match agent.agent_id.as_str() {
        "brand-voice-analyzer" => {
            let v = brand_voice(h);
            (v.to_string(), Some(v))
        }
        "blog-writer" => (write_draft(h), None),
        "blog-editor" | "senior-editor" => (edit(h), None),
        "seo-specialist" => {
            let v = seo(h);
            (v.to_string(), Some(v))
        }
        "blog-reviewer" => {
            let v = review(h);
            (v.to_string(), Some(v))
        }
        other => (format!("[offline {other}] {}", str_of(h, "topic")), None),
    };
    Reply {
        prompt_tokens: words(&call.system) + words(&call.user),
        completion_tokens: words(&text),
        text,
        json,
        provider: OFFLINE.into(),
        model: OFFLINE.into(),
        mode: None,
        cost_usd: 0.0,
        notes: Vec::new(),
    }
}

fn words(s: &str) -> i32 {
    s.split_whitespace().count() as i32
}

fn str_of<'a>(h: &'a Value, key: &str) -> &'a str {
    h.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The most frequent longer words of the page: its vocabulary.
fn vocabulary(text: &str) -> Vec<String> {
    let stop = [
        "about", "their", "there", "which", "these", "those", "other", "every", "while", "where",
        "would", "could", "should", "because", "through", "with", "from", "your", "this", "that",
        "have", "will", "more", "into", "than", "them", "they", "what", "when", "also", "just",
    ];
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if w.chars().count() >= 5 && !stop.contains(&w.as_str()) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(8).map(|(w, _)| w).collect()
}

fn brand_voice(h: &Value) -> Value {
    let text = str_of(h, "text");
    let sentences: Vec<String> = text
        .split(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| s.split_whitespace().count() >= 4)
        .take(3)
        .map(|s| format!("{s}."))
        .collect();
    let exclaims = text.matches('!').count();
    let tone = if exclaims > 2 {
        vec!["energetic", "friendly"]
    } else {
        vec!["warm", "confident", "plain-spoken"]
    };
    json!({
        "tone": tone,
        "audience": format!("Shoppers of {} who care about craft and quality", host(str_of(h, "store_url"))),
        "vocabulary": vocabulary(text),
        "do": ["Speak to the reader as \"you\"", "Name materials and makers", "Keep sentences short"],
        "dont": ["Hype or superlatives without proof", "Jargon", "Pressure to buy"],
        "sample_phrases": sentences,
    })
}

fn host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "the store".into())
}

fn write_draft(h: &Value) -> String {
    let channel = str_of(h, "channel");
    let topic = match str_of(h, "topic") {
        "" => "what makes our collection different",
        t => t,
    };
    let bv = h.get("brand_voice").cloned().unwrap_or(Value::Null);
    let vocab: Vec<&str> = bv
        .get("vocabulary")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).take(3).collect())
        .unwrap_or_default();
    let vocab = if vocab.is_empty() {
        "care, craft and quality".to_owned()
    } else {
        vocab.join(", ")
    };
    let feedback = h
        .get("feedback")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let wants_example = feedback
        .iter()
        .filter_map(Value::as_str)
        .any(|f| f.to_lowercase().contains("example"));
    let example = if wants_example {
        format!(
            " {EXAMPLE_MARK} one customer styled it for a weekend away and wore it three days running."
        )
    } else {
        String::new()
    };
    let notes: Vec<&str> = feedback
        .iter()
        .filter_map(Value::as_str)
        .filter(|f| !f.to_lowercase().contains("example"))
        .collect();
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" (Revised: {}.)", notes.join("; "))
    };
    match channel {
        "x" => {
            let t = format!("{topic}: made with {vocab}.{example}{notes} #craft");
            clip(&t, 270)
        }
        "linkedin" => format!(
            "{topic}\n\nWe built our collection around {vocab}. Every piece is chosen for how it is made \
             and how long it lasts.{example}{notes}\n\nWhat do you look for when you buy to keep?"
        ),
        "facebook" => {
            format!("{topic}! Made with {vocab}.{example}{notes} Come and see the new pieces.")
        }
        _ => format!(
            "# {topic}\n\n## Why it matters\n\nWe choose every piece for {vocab}. Good things are made \
             slowly, by people who know their materials.{example}\n\n## What you get\n\n- Materials you \
             can name\n- Makers you can thank\n- Things that last{notes}\n\n## Come and see\n\nVisit the \
             shop to see the collection in person."
        ),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max - 1).collect::<String>() + "…"
    }
}

fn edit(h: &Value) -> String {
    let draft = str_of(h, "draft").trim();
    let limit = match str_of(h, "channel") {
        "x" => 280,
        "linkedin" => 3000,
        "facebook" => 63_206,
        _ => usize::MAX,
    };
    clip(&draft.replace("  ", " "), limit)
}

fn seo(h: &Value) -> Value {
    let topic = str_of(h, "topic");
    let draft = str_of(h, "draft");
    let title = draft
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or(topic)
        .to_owned();
    let keywords = vocabulary(draft);
    json!({
        "title": clip(&title, 60),
        "meta_description": clip(&format!("{title}: how we choose every piece, and why it lasts."), 155),
        "keywords": keywords,
    })
}

fn review(h: &Value) -> Value {
    let draft = str_of(h, "draft");
    let has_example = draft.contains(EXAMPLE_MARK);
    let base = if has_example { 86 } else { 68 };
    let feedback = if has_example {
        "Clear, on-brand and concrete. Ready for a human look.".to_owned()
    } else {
        EXAMPLE_FEEDBACK.to_owned()
    };
    json!({
        "platform_appropriateness": base + 2,
        "style_consistency": base + 1,
        "clarity": base,
        "engagement": base - 2,
        "grammar": 95,
        "overall": base,
        "feedback": feedback,
    })
}
