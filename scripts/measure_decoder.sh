#!/usr/bin/env bash
# A fine-tuned VAE decoder against the shipped one, on every built-in model it would serve
# (docs/builtin-model.md, "The VAE decoder at 128"). The encoder is the same, so a model's
# latents are the same with either decoder: every comparison is clip by clip.
#   scripts/measure_decoder.sh NEW_VAE_FOLDER
# PARTS (default all, in order): interp ceilings aspects base turbo i2v report. OUT: outputs/decoder.
# Copies of the built-in folders with the new vae/ go to $WORK (default runs/decoder-check).
# The old decoder's sides are this project's earlier runs of the same commands (outputs/gpu128b-S
# for the base, outputs/lumina128/aspect-* for the Lumina model; scripts/measure_lumina.sh);
# a side that is missing is run here.
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
NEW_VAE=${1:?usage: scripts/measure_decoder.sh NEW_VAE_FOLDER}
OUT=${OUT:-outputs/decoder}
WORK=${WORK:-runs/decoder-check}
PARTS=${PARTS:-"interp ceilings aspects base turbo i2v report"}
BASE_SEEDS=${BASE_SEEDS:-"9301 9302 9303 9304"}
ASPECT_SEEDS=${ASPECT_SEEDS:-"9301 9302"}
ASPECTS=${ASPECTS:-"224x128 128x224 192x128"}
BUILTIN=kumovideo/builtin
mkdir -p "$OUT" "$WORK"
for name in kumo-shapes kumo-shapes-lumina kumo-shapes-frames kumo-shapes-turbo; do
    if [[ ! -d "$WORK/$name" ]]; then
        cp -r "$BUILTIN/$name" "$WORK/$name.tmp"
        rm -rf "$WORK/$name.tmp/vae" && cp -r "$NEW_VAE" "$WORK/$name.tmp/vae"
        mv "$WORK/$name.tmp" "$WORK/$name"
    fi
done
pooled() { .venv/bin/python scripts/pooled_eval.py --a $1 --b $2; }
# kumo eval shapes into $2 with model $1 unless $2 already holds results.json (a stopped run resumes)
shapes() { local model=$1 out=$2; shift 2; [[ -f "$out/results.json" ]] || $KUMO eval shapes --model "$model" "$@" --out "$out" --json > /dev/null; }
json_eval() { local out=$1; shift; [[ -f "$out.json" ]] || { $KUMO eval "$@" --json > "$out.json.tmp" && mv "$out.json.tmp" "$out.json"; }; }
for part in $PARTS; do
    case $part in
    interp)  # interpolation x4 of 32 rendered clips: in-betweens, keyframes, the VAE's ceiling
        json_eval "$OUT/interp-old" interpolate --model "$BUILTIN/kumo-shapes-frames" --n 32
        json_eval "$OUT/interp-new" interpolate --model "$WORK/kumo-shapes-frames" --n 32 ;;
    ceilings)  # the judge on rendered captions through each decoder, square and wide
        for size in 128x128 224x128; do
            for side in old new; do
                model=$BUILTIN/kumo-shapes-lumina; [[ $side == new ]] && model=$WORK/kumo-shapes-lumina
                shapes "$model" "$OUT/vae-$side-$size" --reference vae --n 64 --seed 9301 --width "${size%x*}" --height "${size#*x}"
            done
        done ;;
    aspects)  # the Lumina model at three non-square sizes and at 128x128
        for seed in $ASPECT_SEEDS; do
            for size in $ASPECTS; do
                shapes "$BUILTIN/kumo-shapes-lumina" "outputs/lumina128/aspect-$size-$seed" --seed "$seed" --width "${size%x*}" --height "${size#*x}"
                shapes "$WORK/kumo-shapes-lumina" "$OUT/lumina-$size-$seed" --seed "$seed" --width "${size%x*}" --height "${size#*x}"
            done
            shapes "$BUILTIN/kumo-shapes-lumina" "outputs/lumina128/single-$seed" --seed "$seed"
            shapes "$WORK/kumo-shapes-lumina" "$OUT/lumina-128x128-$seed" --seed "$seed"
        done ;;
    base)  # the 128x128 base, default settings
        for seed in $BASE_SEEDS; do
            shapes "$BUILTIN/kumo-shapes" "outputs/gpu128b-$seed" --seed "$seed"
            shapes "$WORK/kumo-shapes" "$OUT/base-$seed" --seed "$seed"
        done ;;
    turbo)  # the Turbo model, 4 consistency steps (both sides run here)
        for seed in $BASE_SEEDS; do
            shapes "$BUILTIN/kumo-shapes-turbo" "$OUT/turbo-old-$seed" --seed "$seed" --turbo --steps 4
            shapes "$WORK/kumo-shapes-turbo" "$OUT/turbo-new-$seed" --seed "$seed" --turbo --steps 4
        done ;;
    i2v)  # image-to-video: the first frame's PSNR and the match
        json_eval "$OUT/i2v-old" i2v --model "$BUILTIN/kumo-shapes-frames" --n 32 --seed 2025
        json_eval "$OUT/i2v-new" i2v --model "$WORK/kumo-shapes-frames" --n 32 --seed 2025 ;;
    report)
        for f in "$OUT"/interp-*.json "$OUT"/i2v-*.json; do [[ -f $f ]] && echo "== $f" && cat "$f"; done
        for size in 128x128 224x128; do
            for side in old new; do
                f="$OUT/vae-$side-$size/results.json"
                [[ -f $f ]] && echo "== VAE ceiling $size, $side decoder" && .venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['summary'])" "$f"
            done
        done
        for size in $ASPECTS; do
            echo "== Lumina model at $size (A old decoder, B new)"
            pooled "$(printf "outputs/lumina128/aspect-$size-%s/results.json " $ASPECT_SEEDS)" \
                "$(printf "$OUT/lumina-$size-%s/results.json " $ASPECT_SEEDS)"
        done
        echo "== Lumina model at 128x128 (A old decoder, B new)"
        pooled "$(printf "outputs/lumina128/single-%s/results.json " $ASPECT_SEEDS)" \
            "$(printf "$OUT/lumina-128x128-%s/results.json " $ASPECT_SEEDS)"
        echo "== base at 128x128 (A old decoder, B new)"
        pooled "$(printf "outputs/gpu128b-%s/results.json " $BASE_SEEDS)" "$(printf "$OUT/base-%s/results.json " $BASE_SEEDS)"
        echo "== Turbo, 4 steps (A old decoder, B new)"
        pooled "$(printf "$OUT/turbo-old-%s/results.json " $BASE_SEEDS)" "$(printf "$OUT/turbo-new-%s/results.json " $BASE_SEEDS)" ;;
    *) echo "unknown part $part (interp ceilings aspects base turbo i2v report)" >&2; exit 2 ;;
    esac
done
