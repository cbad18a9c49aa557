#!/usr/bin/env bash
# Every figure of docs/lumina.md "How well it does", in one run (2 CPU cores: about 40 minutes).
#   scripts/measure_lumina.sh [MODEL]   # MODEL: a pipeline folder (default: the built-in model)
# 512 clips = the eight 64-caption draws --seed 3001..3008 of docs/turbo.md (half one-object,
# half two-object, none of them captions the model trained on), paired clip by clip.
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
MODEL=${1:-kumovideo/builtin/kumo-shapes-lumina}
OUT=${OUT:-outputs/lumina}
SEEDS=${SEEDS:-"3001 3002 3003 3004 3005 3006 3007 3008"}
pooled() { .venv/bin/python scripts/pooled_eval.py --a $1 --b $2; }
# kumo eval shapes into $1 unless it already holds results.json (a stopped run resumes)
shapes() { local out=$1; shift; [[ -f "$out/results.json" ]] || $KUMO eval shapes --model "$MODEL" "$@" --out "$out" --json > /dev/null; }
for seed in $SEEDS; do
    # 1. multi-scale: single-scale vs the model's default split, same captions and noise
    shapes "$OUT/single-$seed" --seed "$seed"
    shapes "$OUT/multiscale-$seed" --seed "$seed" --multiscale
    # 2. motion: the match rate told the default motion (score 20, m = 1) vs no score
    shapes "$OUT/motion20-$seed" --seed "$seed" --motion-score 20
done
echo "== multi-scale vs single-scale (A single, B multiscale)"; pooled "$OUT/single-*/results.json" "$OUT/multiscale-*/results.json"
echo "== motion score 20 vs no score (A no score, B score 20)"; pooled "$OUT/single-*/results.json" "$OUT/motion20-*/results.json"
# The denoising loop side by side, one clip (guidance: batch 2), same process
$KUMO bench --preset builtin --multiscale --no-e2e --runs 5
# 2b. motion follows the score: 16 captions x 5 scores over the model's range (+ no score)
$KUMO eval motion --model "$MODEL" --n 16 --seed 2024 --out "$OUT/motion"
# 3. any aspect: three non-square sizes on the first four draws (256 clips each) vs the square
for size in 112x64 64x112 96x64; do
    for seed in 3001 3002 3003 3004; do
        shapes "$OUT/aspect-$size-$seed" --seed "$seed" --width "${size%x*}" --height "${size#*x}"
    done
    echo "== $size vs 64x64 (first four draws)"
    .venv/bin/python - "$OUT" "$size" <<'PY'
import json, sys
from pathlib import Path
out, size = Path(sys.argv[1]), sys.argv[2]
def rate(prefix):
    clips = [c for s in range(3001, 3005) for c in json.loads((out / f"{prefix}-{s}" / "results.json").read_text())["clips"]]
    one = [c["match"] for c in clips if " and " not in c["caption"]]
    two = [c["match"] for c in clips if " and " in c["caption"]]
    return f"{100 * sum(c['match'] for c in clips) / len(clips):.1f}% (one {100 * sum(one) / len(one):.1f}%, two {100 * sum(two) / len(two):.1f}%, n={len(clips)})"
print(f"64x64: {rate('single')}  {size}: {rate('aspect-' + size)}")
PY
done
