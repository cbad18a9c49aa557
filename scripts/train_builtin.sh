#!/usr/bin/env bash
# Re-train the built-in ShapesWorld model from scratch, the way the shipped one was made.
# Each step resumes where it stopped if interrupted (re-run the script).
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
$KUMO train vae --config configs/builtin-vae.yaml --resume
$KUMO train cache-latents --vae runs/builtin-vae/vae --out runs/builtin-latents --num-clips ${NUM_CLIPS:-2048}
$KUMO train dit --config configs/builtin-dit.yaml --resume
# Second phase: 8x more clips (the first 2048 are the ones above), held-out captions never trained on.
$KUMO train cache-latents --vae runs/builtin-vae/vae --out runs/builtin-latents-16k --num-clips 16384
$KUMO train dit --config configs/builtin-dit-continue.yaml --resume --threads 2
# Third phase: the same clips, 21,000 more steps on a cosine-decaying learning rate.
$KUMO train dit --config configs/builtin-dit-phase3.yaml --resume --threads 2
# Fourth phase: another cosine cycle from phase 3's EMA weights.
$KUMO train dit --config configs/builtin-dit-phase4.yaml --resume --threads 2
$KUMO train turbo --config configs/builtin-turbo.yaml --resume
# Install into the package: `kumo generate` uses these when --model is not given.
rm -rf kumovideo/builtin/kumo-shapes kumovideo/builtin/kumo-shapes-turbo
cp -r runs/builtin-dit-p4/pipeline kumovideo/builtin/kumo-shapes
cp -r runs/builtin-turbo-p4/pipeline kumovideo/builtin/kumo-shapes-turbo
