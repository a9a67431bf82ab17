#!/usr/bin/env bash
# One channel's pipeline against a real model server, from `pipeline start` to a draft
# waiting for approval, as an operator runs it: the server from
# scripts/real-model-server.sh (or any OpenAI-compatible one), a database to use
# (DATABASE_URL; it is migrated, and its agents are pointed at MODEL), a store page
# served from a temporary folder, one `copydesk worker`. Prints every job, every model
# call (dialect, mode, status, notes) and the evaluation's scores; exits non-zero if a
# job failed or a step ran twice.
#
#   DATABASE_URL=postgres://… scripts/real-model-pipeline.sh [BASE_URL] [MODEL] [CHANNEL]
#
# Defaults: http://127.0.0.1:8089/v1, smollm2, x. Uses target/debug/copydesk unless
# COPYDESK names another binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base=${1:-http://127.0.0.1:8089/v1}
model=${2:-smollm2}
channel=${3:-x}
bin=${COPYDESK:-$root/target/debug/copydesk}
: "${DATABASE_URL:?set DATABASE_URL to a database this check may use}"
work=$(mktemp -d)
cleanup() { kill "${worker:-}" "${site:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/index.html" <<'HTML'
<html><head><title>Linen &amp; Loom</title></head><body>
<h1>Linen woven slowly</h1>
<p>Our linen is woven in small mills in Lithuania and mended for free, for life.</p>
<p>We make sheets, towels and shirts that get softer every year.</p></body></html>
HTML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
site=$!

export COPYDESK_LLM_BASE_URL=$base
# The store page is served on this machine.
export COPYDESK__FETCH__ALLOW_LOOPBACK=true
"$bin" migrate
psql "$DATABASE_URL" -qc "UPDATE agent_model_configs SET model_id = '$model'"
"$bin" models probe "$base" --model "$model"
project=$("$bin" pipeline start --new "real model $(date +%s)" --store-url "http://127.0.0.1:$port/" \
    --channels "$channel" --topic "Why linen lasts" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["project_id"])')
echo "project $project"
RUST_LOG=${RUST_LOG:-warn} "$bin" worker > "$work/worker.log" 2>&1 &
worker=$!

state() {
    psql "$DATABASE_URL" -Atc "SELECT count(*) FILTER (WHERE status = 'failed'),
        count(*) FILTER (WHERE kind = 'evaluation' AND status = 'needs_approval'),
        count(*) FILTER (WHERE status IN ('needs_approval') AND kind = 'brand_voice_analysis')
        FROM jobs WHERE project_id = '$project'"
}
deadline=$((SECONDS + ${TIMEOUT:-1200}))
while :; do
    IFS='|' read -r failed waiting brand < <(state)
    if [ "$brand" -gt 0 ]; then
        for a in $("$bin" approvals list --status pending --project "$project" --json \
                | python3 -c 'import json,sys; print(" ".join(a["id"] for a in json.load(sys.stdin)))'); do
            "$bin" approvals approve "$a" --by real-model-check >/dev/null
            echo "approved the brand voice ($a)"
        done
    fi
    if [ "$failed" -gt 0 ] || [ "$waiting" -gt 0 ] || [ $SECONDS -gt $deadline ]; then break; fi
    sleep 2
done
echo
psql "$DATABASE_URL" -c "SELECT kind, status, attempts, left(coalesce(last_error, ''), 120) AS last_error
    FROM jobs WHERE project_id = '$project' ORDER BY created_at"
psql "$DATABASE_URL" -c "SELECT r.agent, r.model, r.dialect, r.structured_mode AS mode, r.status,
        r.prompt_tokens, r.completion_tokens, r.duration_ms, left(coalesce(r.error, r.notes, ''), 100) AS error_or_notes
    FROM runs r JOIN jobs j ON j.id = r.job_id WHERE j.project_id = '$project' ORDER BY r.created_at"
psql "$DATABASE_URL" -c "SELECT data->'iteration' AS iteration, data->'scores' AS scores, data->'repairs' AS repairs
    FROM artifacts WHERE project_id = '$project' AND kind = 'evaluation' ORDER BY created_at"
bad=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM jobs WHERE project_id = '$project'
    AND (status = 'failed' OR attempts > 1)")
waiting=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM jobs WHERE project_id = '$project'
    AND kind = 'evaluation' AND status = 'needs_approval'")
if [ "$bad" -ne 0 ] || [ "$waiting" -ne 1 ]; then
    echo "FAILED: $bad job(s) failed or ran twice; $waiting draft(s) waiting for approval"
    tail -20 "$work/worker.log"
    exit 1
fi
echo "OK: the $channel draft waits for approval; no job failed, none ran twice"
