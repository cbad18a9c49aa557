#!/usr/bin/env bash
# The built-in model's Lumina-Video fine-tune (docs/lumina.md) on a text-to-video base, in one
# command: multi-scale patching + motion conditioning + aspect buckets, trained together.
#   scripts/train_builtin_lumina.sh [BASE [SIZE]]
#     BASE: a pipeline folder (default: the built-in base, kumovideo/builtin/kumo-shapes)
#     SIZE: 128 (default; configs/builtin-lumina-128.yaml) or 64 (configs/builtin-lumina.yaml,
#           the first Lumina model, on the 64x64 CPU base)
# At 128 the coarse scale and motion embedding start from the shipped Lumina model's
# (scripts/graft_feature_heads.py), then the bucketed latent cache with motion amounts is
# encoded by the base's VAE, then the fine-tune runs and exports to runs/builtin-lumina-128/pipeline.
# Each step resumes where it stopped if interrupted (re-run the script). A cache encoded by another
# VAE is refused in one line: for a new base, move the run's graft, cache and output folders away
# first. INSTALL=1 copies the result into the package as the built-in Lumina model.
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
PYTHON=${PYTHON:-.venv/bin/python}
BASE=${1:-kumovideo/builtin/kumo-shapes}
SIZE=${2:-128}
THREADS=${THREADS:-2}
case "$SIZE" in
    128)
        CONFIG=configs/builtin-lumina-128.yaml RUN=runs/builtin-lumina-128
        [[ -d runs/lumina128-graft ]] || \
            $PYTHON scripts/graft_feature_heads.py "$BASE" kumovideo/builtin/kumo-shapes-lumina runs/lumina128-graft
        $KUMO train cache-latents --vae "$BASE/vae" --out runs/lumina128-latents --num-clips 2048 --seed 7200 \
            --motion-range 0.5,1.5 --threads "$THREADS" \
            --buckets 128x128,224x128,128x128,192x128,128x128,128x224,128x128,256x128,128x128,128x192,224x128,128x256
        $KUMO train dit --config "$CONFIG" --resume --threads "$THREADS"
        ;;
    64)
        CONFIG=configs/builtin-lumina.yaml RUN=runs/builtin-lumina
        $KUMO train cache-latents --vae "$BASE/vae" --out runs/builtin-lumina-latents --num-clips 8192 --seed 7000 \
            --motion-range 0.5,1.5 --threads "$THREADS" \
            --buckets 64x64,96x64,64x64,64x96,64x64,112x64,64x64,64x112,64x64,128x64,64x64,64x128
        $KUMO train dit --config "$CONFIG" --set init_from="\"$BASE\"" --resume --threads "$THREADS"
        ;;
    *) echo "SIZE must be 128 or 64, not $SIZE" >&2; exit 2 ;;
esac
if [[ "${INSTALL:-0}" == 1 ]]; then
    rm -rf kumovideo/builtin/kumo-shapes-lumina
    cp -r "$RUN/pipeline" kumovideo/builtin/kumo-shapes-lumina
fi
