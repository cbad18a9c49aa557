#!/usr/bin/env bash
# A fine-tuned VAE decoder against another, on every 128x128 built-in model it would serve
# (docs/builtin-model.md, "The VAE decoder at 128"). The encoder is the same, so a model's
# latents are the same with either decoder: every comparison is clip by clip.
#   scripts/measure_decoder.sh NEW_VAE_FOLDER OLD_VAE_FOLDER
# The decoder shipped before 2026-12-05, as an OLD_VAE_FOLDER:
#   mkdir -p runs/vae-old && for f in config.json diffusion_pytorch_model.safetensors; do
#     git show f4e6651:kumovideo/builtin/kumo-shapes/vae/$f > runs/vae-old/$f; done
# PARTS (default all, in order): interp ceilings aspects base turbo i2v report. OUT: outputs/decoder.
# Copies of the built-in folders with each vae/ go to $WORK/new and $WORK/old (default
# runs/decoder-check). A part resumes: results already in $OUT are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
NEW_VAE=${1:?usage: scripts/measure_decoder.sh NEW_VAE_FOLDER OLD_VAE_FOLDER}
OLD_VAE=${2:?usage: scripts/measure_decoder.sh NEW_VAE_FOLDER OLD_VAE_FOLDER}
OUT=${OUT:-outputs/decoder}
WORK=${WORK:-runs/decoder-check}
PARTS=${PARTS:-"interp ceilings aspects base turbo i2v report"}
BASE_SEEDS=${BASE_SEEDS:-"9301 9302 9303 9304"}
ASPECT_SEEDS=${ASPECT_SEEDS:-"9301 9302"}
ASPECTS=${ASPECTS:-"224x128 128x224 192x128"}
mkdir -p "$OUT" "$WORK/new" "$WORK/old"
for side in new old; do
    vae=$NEW_VAE; [[ $side == old ]] && vae=$OLD_VAE
    for name in kumo-shapes kumo-shapes-lumina kumo-shapes-frames kumo-shapes-turbo; do
        if [[ ! -d "$WORK/$side/$name" ]]; then
            cp -r "kumovideo/builtin/$name" "$WORK/$side/$name.tmp"
            rm -rf "$WORK/$side/$name.tmp/vae" && cp -r "$vae" "$WORK/$side/$name.tmp/vae"
            mv "$WORK/$side/$name.tmp" "$WORK/$side/$name"
        fi
    done
done
pooled() { .venv/bin/python scripts/pooled_eval.py --a $1 --b $2; }
# kumo eval shapes into $2 with model $1 unless $2 already holds results.json (a stopped run resumes)
shapes() { local model=$1 out=$2; shift 2; [[ -f "$out/results.json" ]] || $KUMO eval shapes --model "$model" "$@" --out "$out" --json > /dev/null; }
json_eval() { local out=$1; shift; [[ -f "$out.json" ]] || { $KUMO eval "$@" --json > "$out.json.tmp" && mv "$out.json.tmp" "$out.json"; }; }
for part in $PARTS; do
    case $part in
    interp)  # interpolation x4 of 32 rendered clips: in-betweens, keyframes, the VAE's ceiling
        for side in old new; do json_eval "$OUT/interp-$side" interpolate --model "$WORK/$side/kumo-shapes-frames" --n 32; done ;;
    ceilings)  # the judge on rendered captions through each decoder, square and wide
        for size in 128x128 224x128; do
            for side in old new; do
                shapes "$WORK/$side/kumo-shapes-lumina" "$OUT/vae-$side-$size" --reference vae --n 64 --seed 9301 --width "${size%x*}" --height "${size#*x}"
            done
        done ;;
    aspects)  # the Lumina model at three non-square sizes and at 128x128
        for seed in $ASPECT_SEEDS; do
            for size in $ASPECTS 128x128; do
                for side in old new; do
                    shapes "$WORK/$side/kumo-shapes-lumina" "$OUT/lumina-$side-$size-$seed" --seed "$seed" --width "${size%x*}" --height "${size#*x}"
                done
            done
        done ;;
    base)  # the 128x128 base, default settings
        for seed in $BASE_SEEDS; do
            for side in old new; do shapes "$WORK/$side/kumo-shapes" "$OUT/base-$side-$seed" --seed "$seed"; done
        done ;;
    turbo)  # the Turbo model, 4 consistency steps
        for seed in $BASE_SEEDS; do
            for side in old new; do shapes "$WORK/$side/kumo-shapes-turbo" "$OUT/turbo-$side-$seed" --seed "$seed" --turbo --steps 4; done
        done ;;
    i2v)  # image-to-video: the first frame's PSNR and the match
        for side in old new; do json_eval "$OUT/i2v-$side" i2v --model "$WORK/$side/kumo-shapes-frames" --n 32 --seed 2025; done ;;
    report)
        for f in "$OUT"/interp-*.json "$OUT"/i2v-*.json; do [[ -f $f ]] && echo "== $f" && cat "$f"; done
        for size in 128x128 224x128; do
            for side in old new; do
                f="$OUT/vae-$side-$size/results.json"
                [[ -f $f ]] && echo "== VAE ceiling $size, $side decoder" && .venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['summary'])" "$f"
            done
        done
        for size in $ASPECTS 128x128; do
            echo "== Lumina model at $size (A old decoder, B new)"
            pooled "$(printf "$OUT/lumina-old-$size-%s/results.json " $ASPECT_SEEDS)" "$(printf "$OUT/lumina-new-$size-%s/results.json " $ASPECT_SEEDS)"
        done
        echo "== base at 128x128 (A old decoder, B new)"
        pooled "$(printf "$OUT/base-old-%s/results.json " $BASE_SEEDS)" "$(printf "$OUT/base-new-%s/results.json " $BASE_SEEDS)"
        echo "== Turbo, 4 steps (A old decoder, B new)"
        pooled "$(printf "$OUT/turbo-old-%s/results.json " $BASE_SEEDS)" "$(printf "$OUT/turbo-new-%s/results.json " $BASE_SEEDS)" ;;
    *) echo "unknown part $part (interp ceilings aspects base turbo i2v report)" >&2; exit 2 ;;
    esac
done
