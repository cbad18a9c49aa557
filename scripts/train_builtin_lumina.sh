#!/usr/bin/env bash
# The built-in model's Lumina-Video fine-tune (docs/lumina.md) on a text-to-video base, in one
# command: the bucketed latent cache with motion amounts from the base's VAE, then the fine-tune
# (multi-scale patching + motion conditioning + aspect buckets), then the export.
#   scripts/train_builtin_lumina.sh [BASE]   # BASE: a pipeline folder (default: runs/builtin-dit-p4/pipeline,
#                                            # what scripts/train_builtin.sh makes)
# Each step resumes where it stopped if interrupted (re-run the script). A cache encoded by another
# VAE is refused in one line: for a new base, move runs/builtin-lumina-latents and runs/builtin-lumina
# away first. INSTALL=1 copies the result into the package as the built-in Lumina model.
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
BASE=${1:-runs/builtin-dit-p4/pipeline}
THREADS=${THREADS:-2}
$KUMO train cache-latents --vae "$BASE/vae" --out runs/builtin-lumina-latents --num-clips 8192 --seed 7000 \
    --motion-range 0.5,1.5 --threads "$THREADS" \
    --buckets 64x64,96x64,64x64,64x96,64x64,112x64,64x64,64x112,64x64,128x64,64x64,64x128
$KUMO train dit --config configs/builtin-lumina.yaml --set init_from="\"$BASE\"" --resume --threads "$THREADS"
if [[ "${INSTALL:-0}" == 1 ]]; then
    rm -rf kumovideo/builtin/kumo-shapes-lumina
    cp -r runs/builtin-lumina/pipeline kumovideo/builtin/kumo-shapes-lumina
fi
