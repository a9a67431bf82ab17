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
                c.title.clone().unwrap_or_default(),
                c.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    writeln!(
        out,
        "{}",
        table(
            &["CHANNEL", "STATE", "DRAFT", "SCORE", "TITLE", "LAST ERROR"],
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
                format!("${:.4}", c.cost_usd),
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
                    r.oldest_ready_secs
                        .map(|v| format!("{v:.1}s"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        writeln!(
            out,
            "{}",
            table(&["KIND", "STATUS", "JOBS", "OLDEST READY"], rows)
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
