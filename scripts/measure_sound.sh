#!/usr/bin/env bash
# Every figure of docs/audio.md "How well it hears" and "Speed", in one run (2 CPU cores, nothing
# else running: about 6 minutes, 2026-12-04).
#   scripts/measure_sound.sh [MODEL]   # MODEL: a V2A pipeline folder (default: the built-in model)
# Judged: 128 held-out captions of the default draw (--seed 2025) and 128 of a fresh one
# (--seed 4096); the judge's own check and the representation's ceiling; then the end-to-end
# times of `kumo v2a` and `kumo generate --audio` beside plain `kumo generate` (three runs each,
# alternating, median; peak RSS from /usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
KUMO=${KUMO:-.venv/bin/kumo}
MODEL=${1:-kumovideo/builtin/kumo-shapes-v2a}
OUT=${OUT:-outputs/sound}
mkdir -p "$OUT"
for seed in 2025 4096; do
    echo "== kumo eval sound --seed $seed"
    $KUMO eval sound --model "$MODEL" --seed "$seed" --out "$OUT/eval-$seed" 2> /dev/null
done
echo "== the judge on the spec's soundtracks, and through the spectrogram + Griffin-Lim"
$KUMO eval sound --reference render --out "$OUT/render" 2> /dev/null
$KUMO eval sound --reference vocoder --out "$OUT/vocoder" 2> /dev/null

PROMPT="a red circle moves up on a black background"
$KUMO generate "$PROMPT" -o "$OUT/clip.mp4" --seed 1 > /dev/null 2>&1
timed() {  # label, command...: wall seconds and peak RSS (GB) of one run
    local label=$1 log
    shift
    log=$(mktemp)
    /usr/bin/time -f "%e %M" -o "$log" "$@" > /dev/null 2>&1
    echo "$label $(cat "$log")" >> "$OUT/times.txt"
    rm -f "$log"
}
rm -f "$OUT/times.txt"
for run in 1 2 3; do
    timed generate $KUMO generate "$PROMPT" -o "$OUT/p.mp4" --seed 1
    timed generate-audio $KUMO generate "$PROMPT" --audio --audio-model "$MODEL" -o "$OUT/a.mp4" --seed 1
    timed v2a $KUMO v2a "$OUT/clip.mp4" --model "$MODEL" -o "$OUT/v.mp4"
    rm -f "$OUT/p.mp4" "$OUT/a.mp4" "$OUT/v.mp4"
done
echo "== end to end, median of three (s), peak RSS (GB)"
.venv/bin/python - "$OUT/times.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, wall, rss_kb = line.split()
    rows.setdefault(label, []).append((float(wall), int(rss_kb)))
base = statistics.median(w for w, _ in rows["generate"])
for label, runs in rows.items():
    wall = statistics.median(w for w, _ in runs)
    extra = f" ({wall - base:+.2f} s over generate)" if label == "generate-audio" else ""
    print(f"{label:15s} {wall:6.2f} s{extra}  peak RSS {max(r for _, r in runs) / 1e6:.2f} GB")
PY
