"""Teach a ShapesWorld pipeline's small T5 to bind each object's words together, then write a
copy of the pipeline folder with that text encoder (docs/builtin-model.md, "Why two objects fail").

The built-in T5 gives each word the same state wherever it stands, so MADiT cannot tell which
colour and motion go with which shape. This fine-tunes the T5 alone on the model's own training
captions with two losses: every token of an object's clause ("a red triangle moves right")
must name, through linear probes, that object's colour, shape, motion and size (which a bag of
words cannot do when the two objects differ), and every state must stay near the original
one (so the transformer trained on it still reads it). The probes are thrown away.

    python scripts/bind_text_encoder.py --out runs/bound-t5          # then fine-tune from it:
    kumo train dit --config configs/builtin-ablate-bound-t5.yaml --threads 1
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path

import torch
from torch import nn

ATTRIBUTES = ("colour", "shape", "motion", "size")


def clause_labels(tokenizer, caption: str, parse_caption, classes: dict[str, list]) -> list[list[int]] | None:
    """Per token of `caption`: the class of each attribute of the object whose clause it is in
    (-100 outside every clause); None where the clauses do not tokenize as prefixes."""
    parsed = parse_caption(caption)
    clauses = caption.split(" on a ")[0].split(" and ")
    ids = tokenizer(caption, add_special_tokens=False).input_ids
    labels = [[-100] * len(ATTRIBUTES) for _ in ids]
    start = 0
    for k, obj in enumerate(parsed["objects"]):
        prefix = " and ".join(clauses[: k + 1])
        end = len(tokenizer(prefix, add_special_tokens=False).input_ids)
        if ids[:end] != tokenizer(prefix, add_special_tokens=False).input_ids[:end]:
            return None
        row = [classes[a].index(obj[a]) for a in ATTRIBUTES]
        for i in range(start, end):
            labels[i] = list(row)
        start = end + 1  # the "and" belongs to neither object
    return labels


def main() -> None:
    from kumovideo.builtin import builtin_model_dir
    from kumovideo.data.shapes_world import ALL_COLOURS, MOTIONS, SHAPES, SIZES, parse_caption
    from kumovideo.pipelines import KumoPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    parser.add_argument("--out", required=True, help="where to write the pipeline folder with the bound T5")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--keep-weight", type=float, default=1.0, help="weight of the stay-near-the-original loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fresh", action="store_true", help="start from a fresh T5 (the shipped one's attention is saturated)"
    )
    args = parser.parse_args()
    folder = Path(args.model or builtin_model_dir())
    torch.manual_seed(args.seed)

    pipe = KumoPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    tokenizer, student = pipe.tokenizer, pipe.text_encoder
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    if args.fresh:
        student = type(student)(student.config).to(teacher.dtype)
    length = pipe.max_sequence_length
    classes = {"colour": list(ALL_COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS), "size": [None, *SIZES]}

    captions = (folder / "training_captions.txt").read_text().splitlines()
    rows, targets = [], []
    for text in captions:
        labels = clause_labels(tokenizer, text, parse_caption, classes)
        if labels is None:
            continue
        labels = (labels + [[-100] * len(ATTRIBUTES)] * length)[:length]
        rows.append(text)
        targets.append(labels)
    ids = pipe._tokenize(rows, length)  # (N, L), as the pipeline feeds T5
    targets = torch.tensor(targets)  # (N, L, 4)
    two = torch.tensor([len(parse_caption(t)["objects"]) == 2 for t in rows])
    print(f"{len(rows)} captions ({int(two.sum())} with two objects) of {len(captions)}")

    width = student.config.d_model
    probes = nn.ModuleList(nn.Linear(width, len(classes[a])) for a in ATTRIBUTES)
    params = [*student.parameters(), *probes.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    student.train()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, len(rows), (args.batch_size,))
        batch, labels = ids[pick], targets[pick]
        states = student(batch)[0]  # (B, L, D)
        with torch.no_grad():
            original = teacher(batch)[0]
        bind = sum(
            nn.functional.cross_entropy(probe(states).flatten(0, 1), labels[..., a].flatten(), ignore_index=-100)
            for a, probe in enumerate(probes)
        ) / len(probes)
        keep = (states - original).pow(2).mean() / original.pow(2).mean()
        loss = bind + args.keep_weight * keep
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 200 == 0 or step == args.steps:
            with torch.no_grad():
                sel = two[pick]
                logits = [probe(states) for probe in probes]
                right = torch.stack([lg.argmax(-1) == labels[..., a] for a, lg in enumerate(logits)], -1)
                mask = (labels[..., 0] >= 0) & sel[:, None]
                acc = right[mask].all(-1).float().mean().item() if mask.any() else float("nan")
            print(
                f"step {step}: bind {bind.item():.3f} keep {keep.item():.4f} "
                f"two-object tokens naming their whole object {100 * acc:.1f}% ({time.perf_counter() - start:.0f} s)"
            )

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    shutil.rmtree(tmp / "text_encoder")
    student.eval().to(teacher.dtype).save_pretrained(tmp / "text_encoder")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
