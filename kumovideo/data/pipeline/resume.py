"""Re-running `kumo data cut` or `kumo data encode` into a folder that already holds output.

A re-run resumes: what is done is kept, the rest is added. That is only right when the re-run
asks for the same output as the run that made the folder, so each command records the
settings that shape its output beside it (cut: per clip in clips.jsonl; encode: in
index.json) and `check_same_settings` refuses a resume whose settings differ, in one line
naming the setting, both values and what to do.

A run killed mid-write leaves its temp files beside their targets (`.NAME.tmp-XXXXXXXX`, the
names `kumovideo.utils.atomic.atomic_file` and the cut's video writer use);
`remove_temp_files` removes those of a folder's own outputs on resume.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumovideo.utils.errors import KumoInputError

# `.NAME.tmp-SUFFIX`: mkstemp's random suffix (a pid and a dash before it are admitted too).
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.tmp-[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Setting:
    """One setting a user chooses, as recorded: its keys in the settings dict, and how its
    value reads in a message (the flag or config key that sets it)."""

    keys: tuple[str, ...]
    describe: Callable[[dict[str, Any]], str]


def check_same_settings(
    out_dir: Path, recorded: Iterable[dict | None], wanted: dict[str, Any], settings: list[Setting], made: str
) -> None:
    """Refuse to resume into `out_dir` when the settings `recorded` with its output (one dict
    per record; None where none was recorded) differ from `wanted`. `made`: what the folder
    holds, e.g. "clips cut"."""
    redo = f"pass the same settings to resume, or choose another -o folder (or delete {out_dir})"
    for before in recorded:
        if before is None:
            raise KumoInputError(
                f"-o {out_dir} holds {made} without a record of their settings (by an older kumovideo "
                f"or another command), so a resume cannot be checked; choose another -o folder (or delete {out_dir})"
            )
        for setting in settings:
            if any(before.get(key) != wanted.get(key) for key in setting.keys):
                raise KumoInputError(
                    f"-o {out_dir} holds {made} with {setting.describe(before)}, but this run asks for "
                    f"{setting.describe(wanted)}; {redo}"
                )


def remove_temp_files(out_dir: Path, is_output: Callable[[str], bool]) -> list[str]:
    """Remove the temp files a killed run left in `out_dir`: hidden `.NAME.tmp-...` files whose
    NAME is one of the folder's own outputs (`is_output`), never anything else. Returns
    their names."""
    if not out_dir.is_dir():
        return []
    removed = []
    for path in out_dir.iterdir():
        match = _TEMP_NAME.fullmatch(path.name)
        if match and is_output(match["target"]) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)
