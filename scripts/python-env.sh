#!/usr/bin/env bash
# The Python environment the tests use: Schemathesis for the API contract test
# (tests/api.rs), and the Python client with its test dependencies (clients/python).
# Made once in target/python-env (or $COPYDESK_PYTHON_ENV); run again after the pinned
# versions change.
set -euo pipefail
cd "$(dirname "$0")/.."
env="${COPYDESK_PYTHON_ENV:-target/python-env}"
python="${PYTHON:-python3}"
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
    echo "python3 has no venv module: apt-get install python3-venv" >&2
    exit 1
fi
if [ ! -x "$env/bin/python" ]; then
    "$python" -m venv "$env"
fi
"$env/bin/pip" install --quiet --disable-pip-version-check -r tests/python-requirements.txt
