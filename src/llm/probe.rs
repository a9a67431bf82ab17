//! `copydesk models probe`: what a model server says it is, and which structured mode
//! it answers a schema in, tried as a call would be (each mode of its dialect, strongest
//! first, until one gives a valid answer). What worked is remembered in `llm_modes`, so
//! workers start there.

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    AgentConfig, Call, Llm, Secret,
    dialect::{self, Dialect, Identified},
    openai::{self, Failure},
    repair,
};
use crate::{db::Db, domain::StructuredMode, store};

/// One mode tried.
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub mode: StructuredMode,
    /// What the request carried for it.
    pub form: String,
    /// `worked`, `refused`, `ignored` (no JSON although a JSON mode was asked),
    /// `invalid` (JSON not of the schema), or `failed` (the request did not get through).
    pub outcome: &'static str,
    /// The answer, or the server's words.
    pub detail: String,
}

/// What a probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub base_url: String,
    pub model: String,
    pub dialect: Dialect,
    pub why: String,
    /// `owned_by` of each model `/models` lists.
    pub owned_by: Vec<String>,
    pub server_header: Option<String>,
    pub tried: Vec<Tried>,
    /// The strongest mode that gave a valid answer.
    pub mode: Option<StructuredMode>,
}

/// The question asked: a review's scores, the shape the evaluation asks for, small.
fn question(agent: &str) -> Call {
    Call {
        agent: agent.to_owned(),
        system: "You review short marketing texts. Score the text from 0 to 100 on each \
                 criterion and say in one sentence how to improve it."
            .into(),
        user: "Text: \"Our linen is woven slowly in small mills and mended for free.\"".into(),
        schema: Some((
            "review".into(),
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["clarity", "engagement", "overall", "feedback"],
                "properties": {
                    "clarity": {"type": "integer", "minimum": 0, "maximum": 100},
                    "engagement": {"type": "integer", "minimum": 0, "maximum": 100},
                    "overall": {"type": "integer", "minimum": 0, "maximum": 100},
                    "feedback": {"type": "string"}
                }
            }),
        )),
        hints: json!({}),
    }
}

/// What the request for `mode` carried, in words.
fn form(dialect: Dialect, mode: StructuredMode, body: &Value) -> String {
    match mode {
        StructuredMode::Native => dialect.native_form().unwrap_or("json_schema").to_owned(),
        StructuredMode::Prompt => "no response_format; the schema in the prompt".to_owned(),
        _ => {
            let mut rf = body["response_format"].clone();
            for k in ["schema", "value"] {
                if rf.get(k).is_some() {
                    rf[k] = json!("<schema>");
                }
            }
            if rf.get("json_schema").is_some() {
                rf["json_schema"]["schema"] = json!("<schema>");
            }
            format!("\"response_format\": {rf}")
        }
    }
}

fn clip(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}…")
    } else {
        t
    }
}

impl Llm {
    /// Asks `base_url` what it is, then asks `agent`'s model the probe's question in each
    /// mode of the dialect until one answers validly; remembers that mode (with the
    /// dialect) in `llm_modes` for every process. `pinned`: the dialect to use instead
    /// of the one found.
    pub async fn probe(
        &self,
        pool: &Db,
        base_url: &str,
        key: Option<&Secret>,
        agent: &AgentConfig,
        pinned: Option<Dialect>,
    ) -> Probe {
        let evidence = self.ask_what_it_is(base_url, key).await;
        let mut found = match pinned {
            Some(d) => Identified::pinned(d),
            None => dialect::identify(&evidence),
        };
        let owned_by = evidence
            .models
            .as_ref()
            .and_then(|m| m["data"].as_array())
            .map(|d| {
                d.iter()
                    .filter_map(|m| m["owned_by"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let call = question(&agent.agent_id);
        let schema = &call.schema.as_ref().expect("the question has a schema").1;
        let mut tried: Vec<Tried> = Vec::new();
        let mut next = found.dialect.modes().first().copied();
        let mut worked = None;
        while let Some(mode) = next {
            let body = openai::request_body(
                found.dialect,
                agent,
                &agent.model_id,
                &call,
                Some(mode),
                None,
            );
            let form = form(found.dialect, mode, &body);
            let sent = openai::send(&self.http, &self.cfg, base_url, key, &body, true).await;
            let (outcome, detail) = match sent {
                Ok(c) => match repair::repair(&c.text, schema, c.finish_reason == "length") {
                    Ok(r) => ("worked", r.value.to_string()),
                    Err(repair::Unusable::NoJson) if mode != StructuredMode::Prompt => {
                        ("ignored", clip(&c.text))
                    }
                    Err(e) => ("invalid", format!("{e}: {}", clip(&c.text))),
                },
                Err(Failure::ModeRefused(m)) => {
                    // Refused in another family's words: that family, asked its way.
                    if let Some(named) = found.after_refusal(&m) {
                        tried.push(Tried {
                            mode,
                            form,
                            outcome: "refused",
                            detail: format!("{m} (the words of {})", named.dialect),
                        });
                        next = named.dialect.modes().first().copied();
                        found = named;
                        continue;
                    }
                    ("refused", m)
                }
                Err(f) => ("failed", f.message().to_owned()),
            };
            let stop = outcome == "worked" || outcome == "failed";
            tried.push(Tried {
                mode,
                form,
                outcome,
                detail,
            });
            if outcome == "worked" {
                worked = Some(mode);
            }
            next = if stop { None } else { mode.weaker() };
        }
        if let Some(mode) = worked
            && let Err(e) =
                store::models::set_mode(pool, base_url, &agent.model_id, mode, found.dialect).await
        {
            tracing::warn!(error = %e, "could not record the mode the probe found");
        }
        Probe {
            base_url: base_url.to_owned(),
            model: agent.model_id.clone(),
            dialect: found.dialect,
            why: found.why,
            owned_by,
            server_header: evidence.server_header,
            tried,
            mode: worked,
        }
    }
}
