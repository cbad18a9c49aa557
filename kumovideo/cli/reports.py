"""What every `kumo eval` command writes and prints the same way: results.json (the
summary and the per-clip verdicts, written atomically) and rates as percentages."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out_dir: Path, summary: dict, clips: list[dict]) -> Path:
    """out_dir/results.json: {"summary": ..., "clips": [...]}, never half-written."""
    from kumovideo.utils.atomic import atomic_file

    path = out_dir / "results.json"
    with atomic_file(path, "w") as f:
        json.dump({"summary": summary, "clips": clips}, f, indent=2, default=float)
    return path


def percent(value: float | None) -> str:
    """A rate as ' 95.3%' (n/a when nothing was judged)."""
    return "  n/a" if value is None else f"{100 * value:5.1f}%"
