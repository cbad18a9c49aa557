#!/usr/bin/env bash
# Issue 19's CPU-time figures (docs/conditioning.md, "CPU time"): `kumo generate` plain and
# with --image (a rendered 128x128 first frame), and `kumo interpolate --factor 4` of a rendered
# 17-frame 64x64 clip, without and with its caption (--prompt: two guidance branches at the
# built-in model's defaults, one without); wall time and peak RSS of the whole command, three
# runs each, the commands alternating, medians. First the machine's speed that hour (a guided
# step of the built-in model; ~23-25 ms on a fast day of the 2-core machine, 52-57 ms on a slow
# one), since every figure here scales with it.
#   bash scripts/measure_frames.sh          # OUT=outputs/measure-frames
set -uo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/measure-frames}
PROMPT="a red circle moves left on a black background"
mkdir -p "$OUT"
$KUMO bench --preset builtin --no-e2e --runs 5 --steps 50 --threads 2 2> /dev/null | grep -E "^eager " \
    | awk '{print "machine speed: " $4 " s a guided step (kumo bench --preset builtin --no-e2e --runs 5 --steps 50 --threads 2)"}'
$KUMO shapes render --n 1 --size 128 --seed 19 --out "$OUT/clip128" > /dev/null 2>&1
$KUMO shapes render --n 1 --size 64 --seed 19 --out "$OUT/clip64" > /dev/null 2>&1
"$PY" - "$OUT" <<'PY'
import sys
from kumovideo.utils.video_io import read_video
from PIL import Image
out = sys.argv[1]
frames, _ = read_video(f"{out}/clip128/clip_00000.mp4")
Image.fromarray(frames[0]).save(f"{out}/first.png")
PY
for i in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$OUT/plain.$i" $KUMO generate "$PROMPT" -o "$OUT/plain.mp4" > /dev/null 2>&1
  /usr/bin/time -f "%e %M" -o "$OUT/image.$i" $KUMO generate "$(cat "$OUT/clip128/clip_00000.txt")" \
    --image "$OUT/first.png" -o "$OUT/image.mp4" > /dev/null 2>&1
  /usr/bin/time -f "%e %M" -o "$OUT/interpolate.$i" $KUMO interpolate "$OUT/clip64/clip_00000.mp4" --factor 4 \
    -o "$OUT/x4.mp4" > /dev/null 2>&1
  /usr/bin/time -f "%e %M" -o "$OUT/interpolate_prompt.$i" $KUMO interpolate "$OUT/clip64/clip_00000.mp4" \
    --factor 4 --prompt "$(cat "$OUT/clip64/clip_00000.txt")" -o "$OUT/x4p.mp4" > /dev/null 2>&1
done
"$PY" - "$OUT" <<'PY'
import statistics, sys
out = sys.argv[1]
medians = {}
for name in ("plain", "image", "interpolate", "interpolate_prompt"):
    rows = [open(f"{out}/{name}.{i}").read().split() for i in (1, 2, 3)]
    medians[name] = statistics.median(float(r[0]) for r in rows)
    rss = max(int(r[1]) for r in rows) / 1024
    print(f"{name}: wall median {medians[name]:.2f} s (runs {', '.join(r[0] for r in rows)}), peak RSS {rss:.0f} MB")
print(f"--image / plain: {medians['image'] / medians['plain']:.2f}x")
PY
