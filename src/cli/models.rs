//! `copydesk models`: what model servers were found to be, and which structured mode
//! each model answers in (`llm_modes`).

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;

use super::{Env, JsonFlag};
use crate::{
    domain::Dialect,
    llm::{self, Llm, Provider},
    report::table,
    store,
};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Ask a model server what it is (its dialect, and why), then ask a model a small
    /// structured question in each mode of that dialect, strongest first, until one
    /// answers validly; that mode is remembered for every worker. BASE_URL defaults to
    /// the configured one (COPYDESK_LLM_BASE_URL or [llm] base_url), the key to
    /// COPYDESK_LLM_API_KEY or OPENROUTER_API_KEY.
    Probe {
        base_url: Option<String>,
        /// The model to ask (default: the agent's model).
        #[arg(long)]
        model: Option<String>,
        /// Whose settings (temperature, max_tokens, model) the question is asked with.
        #[arg(long, default_value = "blog-reviewer")]
        agent: String,
        /// Use this dialect instead of finding it.
        #[arg(long)]
        dialect: Option<Dialect>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What was learned of each server and model: mode, dialect, when.
    List(JsonFlag),
}

pub async fn run(
    cmd: ModelsCommand,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        ModelsCommand::Probe {
            base_url,
            model,
            agent,
            dialect,
            json,
        } => {
            let cfg = &env.settings.llm;
            let key = llm::key_from_env();
            let base_url = base_url
                .or_else(llm::base_url_from_env)
                .unwrap_or_else(|| cfg.base_url.clone());
            let mut agent = store::agents::get(pool, &agent, None)
                .await?
                .with_context(|| format!("agent {agent:?} has no row in agent_model_configs"))?;
            if let Some(m) = model {
                agent.model_id = m;
            }
            let llm = Llm::new(
                Provider::Remote {
                    base_url: base_url.clone(),
                    api_key: key.clone(),
                },
                cfg,
            );
            let probe = llm
                .probe(pool, &base_url, key.as_ref(), &agent, dialect)
                .await;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&probe)?)?;
                return Ok(());
            }
            writeln!(out, "server   {}", probe.base_url)?;
            writeln!(out, "dialect  {} ({})", probe.dialect, probe.why)?;
            if !probe.owned_by.is_empty() {
                writeln!(out, "owned_by {}", probe.owned_by.join(", "))?;
            }
            writeln!(out, "model    {}\n", probe.model)?;
            let rows = probe
                .tried
                .iter()
                .map(|t| {
                    vec![
                        t.mode.to_string(),
                        t.outcome.to_owned(),
                        t.form.clone(),
                        t.detail.chars().take(120).collect(),
                    ]
                })
                .collect();
            writeln!(
                out,
                "{}",
                table(&["MODE", "OUTCOME", "ASKED AS", "ANSWER"], rows)
            )?;
            match probe.mode {
                Some(m) => writeln!(
                    out,
                    "\n{} answers in {m}, remembered for every worker (llm_modes)",
                    probe.model
                )?,
                None => writeln!(
                    out,
                    "\nno mode gave a valid answer: calls will step down to the prompt and repair what comes"
                )?,
            }
        }
        ModelsCommand::List(f) => {
            f.print(
                out,
                store::models::learned(pool).await?,
                "nothing learned yet: the first structured call (or `copydesk models probe`) learns it",
                &["BASE URL", "MODEL", "MODE", "DIALECT", "LEARNED"],
                |l| {
                    vec![
                        l.base_url,
                        l.model,
                        l.mode.to_string(),
                        l.dialect.map_or("?".to_owned(), |d| d.to_string()),
                        l.learned_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    ]
                },
            )?;
        }
    }
    Ok(())
}
