#!/usr/bin/env bash
# Set up (idempotent) and run every CPU test tier: lint, types, unit, in-process SGLang caches,
# live loopback cluster with real SGLang workers, simulator. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${SAGA_VENV:-.venv}
export PYTHONDONTWRITEBYTECODE=1
echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy" saga_sgl router
echo "== pytest"
exec "$VENV/bin/python" -m pytest "$@"
