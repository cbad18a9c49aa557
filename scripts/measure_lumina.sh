#!/usr/bin/env bash
# Every figure of docs/lumina.md "How well it does", in one run (2 CPU cores: about 40 minutes
# at 64x64, two hours at 128x128 on one thread; split it over two processes with PARTS/SEEDS).
#   scripts/measure_lumina.sh [MODEL]   # MODEL: a pipeline folder (default: the built-in Lumina model)
# SIZE=128 (default) or 64: the model's square size, which sets the draws and the three
# non-square sizes. 512 clips = eight 64-caption draws (half one-object, half two-object, none
# of them captions the model trained on), paired clip by clip: at 128 --seed 9301..9308, the
# draws the 128x128 base was shipped on (docs/builtin-model.md); at 64 --seed 3001..3008.
# PARTS (default all, in order): scales (single-scale, --multiscale and --motion-score 20 on
# every draw), bench, motion, aspects, report. A stopped run resumes (finished draws are kept).
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
MODEL=${1:-kumovideo/builtin/kumo-shapes-lumina}
SIZE=${SIZE:-128}
PARTS=${PARTS:-"scales bench motion aspects report"}
ASPECT_DRAWS=${ASPECT_DRAWS:-4}  # 64-caption draws per non-square size
if [[ "$SIZE" == 128 ]]; then
    FIRST=9301 ASPECTS=${ASPECTS:-"224x128 128x224 192x128"} OUT=${OUT:-outputs/lumina128}
else
    FIRST=3001 ASPECTS=${ASPECTS:-"112x64 64x112 96x64"} OUT=${OUT:-outputs/lumina}
fi
ALL=$(seq $FIRST $((FIRST + 7)))
SEEDS=${SEEDS:-$ALL}
# unquoted: globs and lists expand; $3: --unpaired where the sides are different captions
pooled() { .venv/bin/python scripts/pooled_eval.py --a $1 --b $2 ${3:-}; }
# kumo eval shapes into $1 unless it already holds results.json (a stopped run resumes)
shapes() { local out=$1; shift; [[ -f "$out/results.json" ]] || $KUMO eval shapes --model "$MODEL" "$@" --out "$out" --json > /dev/null; }
for part in $PARTS; do
    case $part in
    scales)
        for seed in $SEEDS; do
            # 1. multi-scale: single-scale vs the model's default split, same captions and noise
            shapes "$OUT/single-$seed" --seed "$seed"
            shapes "$OUT/multiscale-$seed" --seed "$seed" --multiscale
            # 2. motion: the match rate told the default motion (score 20, m = 1) vs no score
            shapes "$OUT/motion20-$seed" --seed "$seed" --motion-score 20
        done ;;
    bench)  # the denoising loop side by side, one clip (guidance: batch 2), same process, at MODEL's split
        split=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1])).get("multiscale_split", 0.5))' \
            "$MODEL/kumo_defaults.json")
        $KUMO bench --preset builtin --multiscale --multiscale-split "$split" --no-e2e --runs 5 --steps 50 \
            --height "$SIZE" --width "$SIZE" ;;
    motion)  # 2b. motion follows the score: 16 captions x 5 scores over the model's range (+ no score)
        $KUMO eval motion --model "$MODEL" --n 16 --seed 2024 --out "$OUT/motion" ;;
    aspects)  # 3. three non-square sizes on the first ASPECT_DRAWS draws (4: 256 clips each)
        for size in $ASPECTS; do
            for seed in $(seq $FIRST $((FIRST + ASPECT_DRAWS - 1))); do
                shapes "$OUT/aspect-$size-$seed" --seed "$seed" --width "${size%x*}" --height "${size#*x}"
            done
        done ;;
    report)
        echo "== multi-scale vs single-scale (A single, B multiscale)"
        pooled "$OUT/single-*/results.json" "$OUT/multiscale-*/results.json"
        echo "== motion score 20 vs no score (A no score, B score 20)"
        pooled "$OUT/single-*/results.json" "$OUT/motion20-*/results.json"
        for size in $ASPECTS; do
            # the draw of unseen captions depends on the clip size: the sides are different captions
            echo "== $size vs ${SIZE}x$SIZE (first $ASPECT_DRAWS draws, A square, B $size)"
            pooled "$(printf "$OUT/single-%s/results.json " $(seq $FIRST $((FIRST + ASPECT_DRAWS - 1))))" \
                "$OUT/aspect-$size-*/results.json" --unpaired
        done ;;
    *) echo "unknown part $part (scales, bench, motion, aspects, report)" >&2; exit 2 ;;
    esac
done
