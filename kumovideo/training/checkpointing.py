"""Training checkpoints: atomic, resumable bit for bit.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding each trained module's
weights (`<name>.safetensors`), the EMA weights (safetensors), the optimizer and LR-schedule state
(`torch.save`, loaded with `weights_only=True`: tensors and plain containers only, no
code), and `state.json`. It is written into a temp folder and renamed into place, so a
`kill -9` at any moment leaves either no new checkpoint or a complete one; the newest
complete one is what `--resume` loads.

Nothing else needs saving for an exact resume: the data and the noise of step s are
drawn from generators seeded by (seed, s, rank), not from a running random state.

FSDP runs (`kumo train dit --fsdp`) write the same `step-NNNNNNN` folders as sharded
torch.distributed.checkpoint (DCP) folders instead (`.metadata` plus one file per rank;
see `kumovideo.distributed.fsdp.FullySharded`), also renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from kumovideo.utils.atomic import atomic_directory
from kumovideo.utils.errors import KumoInputError

_STEP_DIR = re.compile(r"^step-(\d{7})$")


def save_checkpoint(
    root: str | Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    ema_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    extra: dict | None = None,
    keep: int | None = 2,
) -> Path:
    """Checkpoint `step` into `root/checkpoints/`, then all but the newest `keep` deleted
    (None: none; the caller prunes)."""
    root = Path(root) / "checkpoints"
    target = root / f"step-{step:07d}"
    with atomic_directory(target) as tmp:
        for name, module in modules.items():  # save_model handles tied weights (T5's embeddings)
            save_model(module, str(tmp / f"{name}.safetensors"))
        if ema_state is not None:
            save_file({k: v.contiguous().cpu() for k, v in ema_state.items()}, str(tmp / "ema.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()}, tmp / "optimizer.pt"
        )
        (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=2))
    if keep is not None:
        prune_checkpoints(root.parent, keep)
    return target


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints under `root`."""
    for old in list_checkpoints(root)[:-keep]:
        # Out of the listing first (a rename is atomic): a kill mid-delete must not leave a
        # half-deleted step-* folder that list_checkpoints would call complete.
        doomed = old.with_name(f".{old.name}.deleting-{os.getpid()}")
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


_LEFTOVER = re.compile(r"^\.step-\d{7}\.(tmp|old|deleting)")


def remove_leftovers(root: str | Path) -> list[str]:
    """Delete the temp folders a killed save or prune left behind (never a complete
    checkpoint: those are named step-NNNNNNN). Call at the start of a run, before saving."""
    folder = Path(root) / "checkpoints"
    removed = []
    if folder.exists():
        for p in folder.iterdir():
            if p.is_dir() and _LEFTOVER.match(p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (temp folders are skipped)."""
    folder = Path(root) / "checkpoints"
    if not folder.exists():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and _STEP_DIR.match(p.name) and ((p / "state.json").exists() or is_sharded_checkpoint(p))
    ]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A DCP checkpoint written by FSDP training (`save_sharded`), not a safetensors one."""
    return (Path(path) / ".metadata").exists() and not (Path(path) / "state.json").exists()


def load_checkpoint(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
) -> tuple[int, dict[str, torch.Tensor] | None, dict]:
    """Restore modules, optimizer and LR schedule in place; return (step, ema_state, state)."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        raise KumoInputError(f"{path} is a sharded (FSDP) checkpoint; resume it with --fsdp")
    for name, module in modules.items():
        load_module_weights(path, name, module)
    opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    try:
        optimizer.load_state_dict(opt["optimizer"])
    except ValueError:  # other parameter groups: e.g. train_text_encoder or train_encoder changed
        raise not_this_run(path, "its optimizer state holds other parameters") from None
    lr_scheduler.load_state_dict(opt["lr_scheduler"])
    ema = load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").exists() else None
    state = json.loads((path / "state.json").read_text())
    return int(state["step"]), ema, state


def checkpoint_world_size(path: str | Path) -> int | None:
    """The number of processes that trained checkpoint `path` (state.json), None when unrecorded."""
    try:
        value = json.loads((Path(path) / "state.json").read_text()).get("world_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


# The module file each kind of run checkpoints (the trainers' TrainState modules), for
# checkpoints written before state.json recorded the kind.
_KIND_OF_MODULE_FILE = {"vae.safetensors": "vae", "transformer.safetensors": "dit", "student.safetensors": "turbo"}


def checkpoint_kind(path: str | Path) -> str | None:
    """Which kind of run (vae, dit or turbo) wrote checkpoint folder `path`: as state.json
    records it, else told by its module files; None when neither says (a sharded checkpoint)."""
    path = Path(path)
    try:
        kind = json.loads((path / "state.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind:
        return kind
    for file, kind in _KIND_OF_MODULE_FILE.items():
        if (path / file).exists():
            return kind
    return None


def not_this_run(path: str | Path, detail: str, advice: str | None = None) -> KumoInputError:
    """The one-line error for a checkpoint that does not fit the model the config builds."""
    advice = advice or "use a fresh output_dir, or the config that run was trained with"
    return KumoInputError(f"checkpoint {path} was written by a different model or config ({detail}); {advice}")


def load_module_weights(path: str | Path, name: str, module: torch.nn.Module, advice: str | None = None) -> None:
    """`module`'s weights from `name`.safetensors in checkpoint folder `path`, or one line
    saying that the checkpoint does not fit the module (the first mismatching key at most)."""
    file = Path(path) / f"{name}.safetensors"
    if not file.exists():
        raise not_this_run(path, f"it has no {file.name}", advice)
    try:
        load_model(module, str(file))  # load_model handles tied weights (T5's embeddings)
    except RuntimeError as exc:
        # torch and safetensors list every mismatching key: name the first one only.
        first = re.search(r'size mismatch for ([^:\s]+)|"([^"]+)"', str(exc))
        detail = f"first mismatch: {first.group(1) or first.group(2)}" if first else f"{file.name} does not fit"
        raise not_this_run(path, detail, advice) from None
