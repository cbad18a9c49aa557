"""A small T5 that binds each object's words together (docs/builtin-model.md, "Why two objects fail").

The built-in model's 2-layer T5 was trained jointly with MADiT and ended giving every word the
same state wherever it stands, its attention peaked on tokens chosen by content (its second
layer saturated: 97% of rows put over 0.9 on one token), and a fine-tune with the binding loss
below stays near chance. A fresh T5 of the same shape learns binding in a few hundred steps.
`bind_text_encoder` trains one on the pipeline's own training captions with two losses:

* binding: every token of an object's clause ("a red triangle moves right") names, through
  linear probes, that object's colour, shape, motion and size. A bag of words cannot do this when
  the two objects differ; the probes are thrown away after training;
* keep: every state stays near the old encoder's (mean squared error relative to the states'
  own size), so the transformer trained on the old states reads the new ones.

    kumo train bind-text --model kumovideo/builtin/kumo-shapes --out runs/bound-t5
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from kumovideo.utils.errors import KumoInputError

ATTRIBUTES = ("colour", "shape", "motion", "size")


def attribute_classes() -> dict[str, list]:
    """Each attribute's classes, in probe order (size None: a caption without a size word)."""
    from kumovideo.data.shapes_world import ALL_COLOURS, MOTIONS, SHAPES, SIZES

    return {"colour": list(ALL_COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS), "size": [None, *SIZES]}


def clause_labels(tokenizer, caption: str, length: int) -> torch.Tensor | None:
    """(length, 4) classes: for each token, its object's colour, shape, motion and size (-100 for
    "and", the background clause, eos and padding); None where a caption's clauses do not
    tokenize as prefixes of it."""
    from kumovideo.data.shapes_world import parse_caption

    classes = attribute_classes()
    parsed = parse_caption(caption)
    clauses = caption.split(" on a ")[0].split(" and ")
    ids = tokenizer(caption, add_special_tokens=False).input_ids
    labels = torch.full((length, len(ATTRIBUTES)), -100, dtype=torch.long)
    start = 0
    for k, obj in enumerate(parsed["objects"]):
        prefix = tokenizer(" and ".join(clauses[: k + 1]), add_special_tokens=False).input_ids
        if ids[: len(prefix)] != prefix:
            return None
        if k:  # skip the "and" tokens between the clauses
            start += len(tokenizer("and", add_special_tokens=False).input_ids)
        labels[start : min(len(prefix), length)] = torch.tensor([classes[a].index(obj[a]) for a in ATTRIBUTES])
        start = len(prefix)
    return labels


def binding_dataset(pipe, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids (N, L) as the pipeline feeds T5, labels (N, L, 4), two-object flags (N,)) for the
    ShapesWorld captions among `captions`."""
    from kumovideo.data.shapes_world import parse_caption

    rows, labels = [], []
    for text in captions:
        try:
            row = clause_labels(pipe.tokenizer, text, pipe.max_sequence_length)
        except ValueError:  # not a ShapesWorld caption
            continue
        if row is not None:
            rows.append(text)
            labels.append(row)
    if not rows:
        raise KumoInputError("no ShapesWorld caption to learn binding from in the model's training_captions.txt")
    two = torch.tensor([len(parse_caption(t)["objects"]) == 2 for t in rows])
    return pipe._tokenize(rows, pipe.max_sequence_length), torch.stack(labels), two


def binding_losses(
    states: torch.Tensor,  # (B, L, D): the new encoder's
    kept: torch.Tensor,  # (B, L, D): the old encoder's, for the same ids
    probes: nn.ModuleList,
    labels: torch.Tensor,  # (B, L, 4): clause_labels
    two: torch.Tensor,  # (B,): two-object captions
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(binding loss: mean cross-entropy of the probes over clause tokens, keep loss: squared
    error relative to the old states' size, the share of two-object clause tokens whose probes
    name all four attributes of their own object)."""
    logits = [probe(states) for probe in probes]  # one (B, L, classes) per attribute
    bind = sum(
        nn.functional.cross_entropy(lg.flatten(0, 1), labels[..., a].flatten(), ignore_index=-100)
        for a, lg in enumerate(logits)
    ) / len(ATTRIBUTES)
    keep = (states - kept).pow(2).mean() / kept.pow(2).mean()
    with torch.no_grad():
        right = torch.stack([lg.argmax(-1) == labels[..., a] for a, lg in enumerate(logits)], -1)
        tokens = (labels[..., 0] >= 0) & two[:, None]
        named = right[tokens].all(-1).float().mean().item() if tokens.any() else float("nan")
    return bind, keep, named


def swapped_state_gap(pipe, caption: str, swapped: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """How differently the pipeline's text encoder reads `caption` and `swapped` (the same
    caption with its two shape words exchanged): (the largest |state - swapped state| over
    tokens once the two shape tokens are put back, the states (2, L, D), the token ids (2, L)).
    0 means a bag of words. Refused in one line unless the two differ in exactly two tokens
    that trade places."""
    ids = pipe._tokenize([caption, swapped], pipe.max_sequence_length)
    a, b = ids.tolist()
    moved = [i for i in range(len(a)) if a[i] != b[i]]
    if len(moved) != 2 or a[moved[0]] != b[moved[1]] or a[moved[1]] != b[moved[0]]:
        raise KumoInputError(
            "the two captions must differ only by two words trading places, each one token of this tokenizer"
        )
    order = list(range(len(a)))
    order[moved[0]], order[moved[1]] = moved[1], moved[0]
    states = pipe.encode_prompt([caption, swapped])  # (2, L, D)
    return (states[0] - states[1][order]).abs().max().item(), states, ids


def check_binding_source(folder: str | Path) -> Path:
    """The pipeline folder's training_captions.txt, which binding is learned from."""
    captions_file = Path(folder) / "training_captions.txt"
    if not captions_file.is_file():
        raise KumoInputError(f"{folder}: no training_captions.txt; binding is learned from the model's own captions")
    return captions_file


def bind_text_encoder(
    folder: str | Path,
    out: str | Path,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 1e-3,
    keep_weight: float = 1.0,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Write `out`: a copy of the pipeline folder `folder` whose text encoder is a fresh T5 of the
    same shape trained to bind (module docstring). Returns its figures on a fixed set of the
    training captions."""
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.training.runtime import progress
    from kumovideo.utils.atomic import atomic_directory

    captions_file = check_binding_source(folder)
    folder = Path(folder)
    torch.manual_seed(seed)
    pipe = KumoPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    encoder = pipe.text_encoder.eval().requires_grad_(False)

    def old(batch: torch.Tensor) -> torch.Tensor:  # the states the transformer was trained on
        with torch.no_grad():
            return encoder(batch)[0]

    ids, labels, two = binding_dataset(pipe, captions_file.read_text().splitlines())

    fresh = type(encoder)(copy.deepcopy(encoder.config)).float().train()  # fine-tuning the old one does not bind

    def new(batch: torch.Tensor) -> torch.Tensor:
        return fresh(batch)[0]

    classes = attribute_classes()
    probes = nn.ModuleList(nn.Linear(encoder.config.d_model, len(classes[a])) for a in ATTRIBUTES)
    params = [*fresh.parameters(), *probes.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # Cosine to a tenth: at a constant rate some seeds stall with a few tokens unbound.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr / 10)
    bar = progress(steps, 0, show_progress, desc="bind text")
    start = time.perf_counter()
    for _ in range(steps):
        pick = torch.randint(0, len(ids), (batch_size,))
        states = new(ids[pick])  # (B, L, D)
        bind, keep, _ = binding_losses(states, old(ids[pick]), probes, labels[pick], two[pick])
        loss = bind + keep_weight * keep
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        bar.update(1)
        bar.set_postfix(bind=f"{bind.item():.3f}", keep=f"{keep.item():.4f}", refresh=False)
    bar.close()
    # Judged on a fixed set of the captions, the same for every run of the same folder.
    judged = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))[:2048]
    with torch.no_grad():
        bind, keep, named = binding_losses(new(ids[judged]), old(ids[judged]), probes, labels[judged], two[judged])
    figures = {
        "steps": steps,
        "bind_loss": round(bind.item(), 4),
        "keep_loss": round(keep.item(), 4),
        "two_object_tokens_naming_their_object": round(named, 4),
        "judged_captions": len(judged),
        "seconds": round(time.perf_counter() - start, 1),
    }

    recipe = {"steps": steps, "batch_size": batch_size, "lr": lr, "keep_weight": keep_weight, "seed": seed}
    with atomic_directory(out) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("text_encoder"))
        fresh.eval().to(_saved_dtype(folder)).save_pretrained(tmp / "text_encoder")
        (tmp / "text_encoder" / "binding.json").write_text(json.dumps({"recipe": recipe, **figures}, indent=2) + "\n")
    return figures


def _saved_dtype(folder: Path) -> torch.dtype:
    """The dtype the folder's text encoder was saved in (the built-in model's is float16)."""
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name)
