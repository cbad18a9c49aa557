#!/usr/bin/env bash
# Issue 17's GPU check in one command (docs/gpu.md): installs the carried wheels (.whl/,
# from `make gpu-wheels`), then runs every part in its own subprocess with its own time
# budget (scripts/gpu/kit.py), writes $OUT/results.json, $OUT/log.txt and $OUT/table.txt,
# and prints the table last.
#
#   scripts/gpu/check.sh                 # on the device: all parts, about 8.5 minutes at most
#   scripts/gpu/check.sh --dry-run       # here: every part at toy sizes on the CPU
#   scripts/gpu/check.sh --only bench,clips --budget 240
#
# Offline: nothing is fetched; diffusers and torchao come from .whl/, the parity
# fixtures from .whl/shared (KUMO_SHARED), PyTorch and the rest from the machine.
set -u
cd "$(dirname "$0")/../.." || exit 2
PY=${PYTHON:-python3}
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done

if [ "$DRY" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${KIT_SITE:-/tmp/site}
  echo "check.sh: installing $(ls .whl/*.whl | wc -l) carried wheel(s) into $SITE" >&2
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "check.sh: wheel install failed; the parts that need diffusers or torchao will say so" >&2
  fi
elif [ "$DRY" = 0 ]; then
  echo "check.sh: no .whl/*.whl here (run 'make gpu-wheels' and carry .whl); using what is installed" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${KUMO_SHARED:-}" ] && [ -f .whl/shared/fixtures/kumovideo/README.md ]; then
  export KUMO_SHARED="$PWD/.whl/shared"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export KUMO_CACHE="${KUMO_CACHE:-/tmp/kumo-gpu-kit-cache}"  # inductor cache shared by the parts
exec "$PY" scripts/gpu/kit.py "$@"
