//! Text reports shared by the command line and the demo: aligned tables, a project's
//! pipeline, the queue's counts.

use std::io::Write;

use copydesk_queue::ops::QueueStats;

use crate::store::status::ProjectStatus;

/// Renders rows as an aligned text table.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// `pipeline show` as text.
pub fn project_status(out: &mut (dyn Write + Send), s: &ProjectStatus) -> std::io::Result<()> {
    writeln!(
        out,
        "project {} ({}): brand voice {}",
        s.name,
        s.project_id,
        s.brand_voice.as_deref().unwrap_or("not started")
    )?;
    let rows = s
        .channels
        .iter()
        .map(|c| {
            vec![
                c.channel.to_string(),
                c.state.clone(),
                c.draft_version
                    .map(|v| {
                        let source = c.draft_source.map(|s| s.as_str()).unwrap_or_default();
                        format!("v{v} {source}")
                    })
                    .unwrap_or_default(),
                c.score.map(|v| format!("{v}/100")).unwrap_or_default(),
                c.model.clone().unwrap_or_default(),
                c.title.clone().unwrap_or_default(),
                c.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    writeln!(
        out,
        "{}",
        table(
            &[
                "CHANNEL",
                "STATE",
                "DRAFT",
                "SCORE",
                "MODEL",
                "TITLE",
                "LAST ERROR"
            ],
            rows
        )
    )?;
    let rows = s
        .cost
        .iter()
        .map(|c| {
            vec![
                c.provider.clone(),
                c.model.clone(),
                c.calls.to_string(),
                c.prompt_tokens.to_string(),
                c.completion_tokens.to_string(),
                if c.unpriced_calls > 0 {
                    format!("${:.4} ({} unpriced)", c.cost_usd, c.unpriced_calls)
                } else {
                    format!("${:.4}", c.cost_usd)
                },
            ]
        })
        .collect();
    writeln!(
        out,
        "{}",
        table(
            &[
                "PROVIDER",
                "MODEL",
                "CALLS",
                "PROMPT TOKENS",
                "COMPLETION TOKENS",
                "COST"
            ],
            rows
        )
    )?;
    writeln!(out, "total cost: ${:.4}", s.total_cost_usd)?;
    let b = &s.budget;
    match (b.budget_usd, b.left_usd) {
        (Some(budget), Some(left)) => writeln!(
            out,
            "budget: ${budget:.2}; spent ${:.4}, reserved ${:.4}, left ${left:.4}",
            b.spent_usd, b.reserved_usd
        )?,
        _ => writeln!(
            out,
            "budget: none; spent ${:.4}, reserved ${:.4}",
            b.spent_usd, b.reserved_usd
        )?,
    }
    if s.cost.iter().any(|c| c.unpriced_calls > 0) {
        writeln!(
            out,
            "note: unpriced calls are models with no price in [llm.prices] whose provider reported no cost: counted as $0"
        )?;
    }
    Ok(())
}

/// `queue stats` as text.
pub fn queue_stats(out: &mut (dyn Write + Send), s: &QueueStats) -> std::io::Result<()> {
    if s.rows.is_empty() {
        writeln!(out, "the queue is empty")?;
    } else {
        let rows = s
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.kind.clone(),
                    r.status.to_string(),
                    r.jobs.to_string(),
                    if r.waiting > 0 {
                        r.waiting.to_string()
                    } else {
                        String::new()
                    },
                    r.oldest_ready_secs
                        .map(|v| format!("{v:.1}s"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        writeln!(
            out,
            "{}",
            table(
                &[
                    "KIND",
                    "STATUS",
                    "JOBS",
                    "WAITING FOR A LIMIT",
                    "OLDEST READY"
                ],
                rows
            )
        )?;
        writeln!(
            out,
            "(done: finished in the last hour; the other statuses: every such job)"
        )?;
    }
    writeln!(
        out,
        "oldest ready job waiting: {}; last 5 minutes: {} done, {} failed",
        s.oldest_ready_secs
            .map(|v| format!("{v:.1}s"))
            .unwrap_or_else(|| "none".into()),
        s.done_last_5m,
        s.failed_last_5m
    )?;
    Ok(())
}
