#!/usr/bin/env bash
# The device takes at most 64 MiB of working tree (tracked files, untracked files git does
# not ignore, carried paths). The built-in model folders alone are over 60 MiB, and the
# kits read only kumovideo/builtin/kumo-shapes (the base recipe) and kumo-shapes-lumina (the
# Lumina recipe, configs/builtin-lumina-128-gpu.yaml): `slim` untracks the others for the moment
# (index only, files stay on disk, and .git/info/exclude hides them), `restore` undoes it.
# Nothing is committed either way; never commit while slim.
#
#   bash scripts/gpu/travel.sh slim      # then the device call(s)
#   bash scripts/gpu/travel.sh restore   # at once after
#   bash scripts/gpu/travel.sh size      # what would travel, with .whl
set -euo pipefail
cd "$(dirname "$0")/../.."
EXCLUDE=.git/info/exclude
MARK="# travel.sh slim"
FOLDERS=(kumovideo/builtin/kumo-shapes-frames kumovideo/builtin/kumo-shapes-turbo
         kumovideo/builtin/kumo-shapes-v2a)

size() {
  local tracked untracked wheels
  tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1 || true)
  untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1 || true)
  wheels=$(du -sb .whl 2>/dev/null | cut -f1 || true)
  echo "tracked ${tracked:-0} + untracked ${untracked:-0} + .whl ${wheels:-0} bytes" \
    "= $(( (${tracked:-0} + ${untracked:-0} + ${wheels:-0}) / 1048576 )) MiB (limit 64)"
}

case "${1:-}" in
  slim)
    grep -qx "$MARK" "$EXCLUDE" 2>/dev/null && { echo "already slim"; size; exit 0; }
    for f in "${FOLDERS[@]}"; do [ -d "$f" ] && git rm -r -q --cached "$f"; done
    { echo "$MARK"; for f in "${FOLDERS[@]}"; do echo "/$f/"; done; echo "$MARK end"; } >> "$EXCLUDE"
    size ;;
  restore)
    sed -i "/^$MARK\$/,/^$MARK end\$/d" "$EXCLUDE"
    git reset -q -- "${FOLDERS[@]}"
    git status --short -- kumovideo/builtin | grep -q . && { echo "kumovideo/builtin differs from HEAD:"; git status --short -- kumovideo/builtin; }
    size ;;
  size) size ;;
  *) echo "usage: bash scripts/gpu/travel.sh slim|restore|size" >&2; exit 2 ;;
esac
