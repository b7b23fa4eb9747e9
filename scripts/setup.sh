#!/usr/bin/env bash
# Idempotent set-up of the CPU environment: .venv with torch 2.13.0 (CPU), sglang 0.5.23 and its
# pinned dependencies (never resolved from sglang's own metadata, which asks for CUDA), the test
# tools, and saga-sgl itself in editable mode. Fast when already done (a stamp of the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SAGA_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

stamp_inputs() { cat requirements/cpu-worker.txt requirements/test.txt pyproject.toml | sha256sum | cut -c1-16; }
STAMP="$VENV/.saga-setup-$(stamp_inputs)"

# The native kernels (kernels/saga_kernels): compiled in place from source when a C compiler is
# found, else saga_kernels uses its pure-Python twin (same decisions). Cheap when up to date.
build_kernels() { (cd kernels && "$VENV_ABS/bin/python" -m saga_kernels.build) || echo "setup: native kernels not built; the pure-Python fallback is used"; }
VENV_ABS=$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/$(basename "$VENV")

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import sglang.version, saga_sgl, saga_kernels" 2>/dev/null; then
  build_kernels
  echo "setup: $VENV is up to date"
  exit 0
fi

t0=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --no-deps --disable-pip-version-check -q)

# torch first, alone: the CPU build must win (2.13.0+cpu). --no-deps everywhere: every package the
# environment needs is listed explicitly in requirements/, so pip never resolves sglang's metadata.
echo "setup: installing the pinned CPU worker environment (torch 2.13.0 CPU, sglang 0.5.23, ...)"
"${PIP[@]}" -r requirements/cpu-worker.txt 2> >(grep -v "is ignored: it is neither" >&2)
echo "setup: installing test tools"
"${PIP[@]}" -r requirements/test.txt 2> >(grep -v "is ignored: it is neither" >&2)
echo "setup: installing saga-sgl (editable; registers the sglang.srt.plugins entry point)"
"${PIP[@]}" --no-build-isolation -e . 2> >(grep -v "is ignored: it is neither" >&2)

torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
case "$torch_version" in
  *+cpu) ;;
  *) echo "setup: expected the CPU build of torch, got $torch_version (a CUDA wheel?)" >&2; exit 1 ;;
esac
for forbidden in torchvision torchaudio torchcodec vllm; do
  if "$VENV/bin/pip" show -q "$forbidden" >/dev/null 2>&1; then
    echo "setup: $forbidden is installed in $VENV; it breaks SGLang's CPU path. Remove it." >&2
    exit 1
  fi
done

# Every package is installed --no-deps, so a missing transitive pin would only show up later as an
# ImportError; pip check finds it now. sglang's own (GPU) requirements are expected to be unmet.
broken=$("$VENV/bin/pip" check 2>&1 | grep -v -e '^sglang ' -e '^No broken requirements' || true)
if [ -n "$broken" ]; then
  echo "setup: missing or conflicting pins in requirements/:" >&2
  echo "$broken" >&2
  exit 1
fi

build_kernels

rm -f "$VENV"/.saga-setup-*
touch "$STAMP"
echo "setup: done in $(( $(date +%s) - t0 )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
