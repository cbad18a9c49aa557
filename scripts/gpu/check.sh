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

. scripts/gpu/wheels.sh
install_carried_wheels check.sh "$DRY"
if [ -z "${KUMO_SHARED:-}" ] && [ -f .whl/shared/fixtures/kumovideo/README.md ]; then
  export KUMO_SHARED="$PWD/.whl/shared"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export KUMO_CACHE="${KUMO_CACHE:-/tmp/kumo-gpu-kit-cache}"  # inductor cache shared by the parts
exec "$PY" scripts/gpu/kit.py "$@"
