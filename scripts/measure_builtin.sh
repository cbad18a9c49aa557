#!/usr/bin/env bash
# The figures in README.md / docs/builtin-model.md / docs/turbo.md come from this script:
# match rates with `kumo eval shapes` (same captions and seeds for every row) and wall
# time / peak memory of `kumo generate` (model loading included), all in one run.
set -uo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
BASE=${BASE:-kumovideo/builtin/kumo-shapes}
TURBO=${TURBO:-kumovideo/builtin/kumo-shapes-turbo}
LADD=${LADD:-runs/builtin-turbo-ladd-p4/pipeline}
OUT=${OUT:-outputs/measure}
N=${N:-64}
mkdir -p "$OUT"
evaluate() {  # name, then kumo eval shapes arguments
  local name=$1; shift
  $KUMO eval shapes --n "$N" --json --out "$OUT/$name" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log" \
    && echo "$name: $(python3 -c "import json,sys; s=json.load(open('$OUT/$name.json')); print(f\"match {100*s['match_rate']:.1f}% one {100*s['one_object']['match_rate']:.1f}% two {100*s['two_objects']['match_rate']:.1f}% bg {100*s['attributes']['background']:.0f}% colour {100*s['attributes']['colour']:.0f}% shape {100*s['attributes']['shape']:.0f}% motion {100*s['attributes']['motion']:.0f}% ({s['steps']} steps, guidance {s['guidance']}, {s['seconds_per_clip']:.2f} s/clip)\")")"
}
evaluate base          --model "$BASE"
evaluate base-cache    --model "$BASE" --step-cache 0.05
evaluate renoise-4     --model "$BASE" --sampler renoise --steps 4 --guidance 1
[ -d "$TURBO" ] && evaluate turbo-4 --model "$TURBO" --steps 4
[ -d "$TURBO" ] && evaluate turbo-8 --model "$TURBO" --steps 8
[ -d "$LADD" ] && evaluate ladd-4  --model "$LADD" --steps 4
[ -d "$LADD" ] && evaluate ladd-8  --model "$LADD" --steps 8

# Wall time and peak RSS of one clip, model loading included: median of 3 runs each.
timeit() {  # name, then kumo generate arguments
  local name=$1; shift
  for i in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$OUT/$name.time.$i" $KUMO generate "a red circle moves left on a black background" \
      -o "$OUT/$name.mp4" "$@" > /dev/null 2>&1
  done
  python3 - "$OUT" "$name" <<'PY'
import statistics, sys
out, name = sys.argv[1:]
rows = [open(f"{out}/{name}.time.{i}").read().split() for i in (1, 2, 3)]
wall = statistics.median(float(r[0]) for r in rows); rss = max(int(r[1]) for r in rows) / 1024
print(f"{name}: wall median {wall:.2f} s (runs {', '.join(r[0] for r in rows)}), peak RSS {rss:.0f} MB")
PY
}
timeit generate-base    # the built-in models' own 128x128, where the timing targets are stated
timeit generate-turbo --turbo
