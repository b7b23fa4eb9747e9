#!/usr/bin/env bash
# Set up (idempotent) and run the main job: a local SGLang cluster on CPU with saga's policies,
# replaying a short agent demo. Extra args go to `python -m saga_sgl.launch` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${SAGA_VENV:-.venv}/bin/python" -m saga_sgl.launch "$@"
