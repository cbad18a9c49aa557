#!/usr/bin/env bash
# Issue 18's training kit for the built-in model in one device call (docs/gpu.md,
# "Training the built-in model on a device"): installs the carried wheels (.whl/, from
# `make gpu-wheels`), then runs scripts/gpu/train_builtin.py, whose parts (env, train,
# train-eager, finish) each run in their own process with their own time budget. Writes
# $OUT/results.json, $OUT/log.txt, the newest checkpoint as $OUT/ckpt-step*.part*of* and
# $OUT/pipeline.tgz, and prints a summary last.
#
#   bash scripts/gpu/train_builtin.sh                         # on the device: 500 s of parts
#   bash scripts/gpu/train_builtin.sh --resume-from runs/gpu-resume
#   bash scripts/gpu/train_builtin.sh --tiny --out /tmp/x      # here: toy size on the CPU
#
# Offline: nothing is fetched; diffusers comes from .whl/, PyTorch and the rest from the machine.
set -u
cd "$(dirname "$0")/../.." || exit 2
PY=${PYTHON:-python3}
TINY=0
for a in "$@"; do [ "$a" = "--tiny" ] && TINY=1; done

. scripts/gpu/wheels.sh
install_carried_wheels train_builtin.sh "$TINY"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}  # the training bar: a line every 30 s in log.txt, not 10 a second
export KUMO_CACHE="${KUMO_CACHE:-/tmp/kumo-gpu-kit-cache}"  # inductor cache (check.sh's too)
exec "$PY" scripts/gpu/train_builtin.py "$@"
