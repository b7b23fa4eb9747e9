#!/usr/bin/env bash
# Set up (idempotent) and run the main job: SGLang workers with the saga plugin, the saga router in
# front, the bundled DSL agents through it, and a summary. Extra args go to `python -m saga_sgl.launch` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${SAGA_VENV:-.venv}/bin/python" -m saga_sgl.launch "$@"
