"""Regional prompts on box tracks: each region's prompt drawn inside its boxes.

A clip with several objects is asked of a model that may read its caption as a bag of words
(the built-in model does: docs/builtin-model.md, "Why two objects fail"), so that it pairs
colours, shapes and motions at random. Given a layout, one box per frame for each object and
a prompt for that object alone, the sampler instead runs one branch per region and takes
each latent pixel's prediction from the branch whose box holds it (MultiDiffusion, Bar-Tal et
al. 2023, sec. 4.2, "region-based text-to-image"; boxes moving over the frames as in
LLM-grounded video diffusion, Lian et al. 2023). Two things keep the branches from fighting:

* each branch sees the other regions' pixels replaced by the background, so that it never
  takes another object for its own (a model trained on one object per prompt would); in the
  first steps, while the layout is being decided, it sees only its own region, so that its
  object starts there (MultiDiffusion's bootstrapping, with the background in place of its
  random colours). The background is the median, per frame and channel, of the clean clip the
  last step predicted outside every box, noised to the step's level.
* while the layout is being decided (the same first steps), each branch sees x rolled (whole
  tokens) so that its region sits at the frame's centre: the model's first predictions, at
  zero SNR, know nothing of the noise and put an object where objects are on average, so a
  box in a corner otherwise starts empty and stays so; its prediction is rolled back before
  it is used. Later steps see x as it is: the roll's seam (the frame's edges meeting in the
  middle of the view) costs outlines once they form.
* outside every box, the mean of the branches' predictions (each predicts background there),
  over the branches whose view held the pixel without wrapping round the frame's edge.

Layouts come from the caller (`regions=`: boxes as fractions of the frame) or from a planner
the checkpoint names in kumo_defaults.json (the built-in model's `"layout":
"kumovideo.data.shapes_world:plan_object_boxes"` lays out its two-object captions).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kumovideo.geometry import ClipGeometry
from kumovideo.schedulers.sampling import v_to_x0
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import is_real

# Share of the steps in which each branch sees only its own region (the layout is decided
# early): 0.4 of 50 steps, t >= 600. On 64 two-object captions of the seed-9501 draw, 0.2 /
# 0.4 / 0.6 / 1 matched 34 / 41 / 41 / 0 (docs/layout.md).
FILL_STEPS = 0.4
# Extra pixels around each box before it is snapped to whole tokens.
BOX_MARGIN_PX = 4.0


@dataclass(frozen=True)
class Region:
    """One object of a layout: what to draw and where, frame by frame."""

    prompt: str
    boxes: np.ndarray  # (F, 4): x0, y0, x1, y1 as fractions of the frame's width and height


# --------------------------------------------------------------------------- inputs


def _box(value: Any, where: str) -> np.ndarray:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(is_real(v) for v in value)):
        raise KumoInputError(f"{where} must be [x0, y0, x1, y1], fractions of the frame in [0, 1]; got {value!r}")
    try:
        box = np.asarray(value, dtype=np.float64)
    except OverflowError:  # a whole number past a float's range: not echoed, it may be long
        raise KumoInputError(f"{where} holds a number too large for a float; boxes are fractions in [0, 1]") from None
    if not (np.all(box >= 0) and np.all(box <= 1) and box[0] < box[2] and box[1] < box[3]):
        raise KumoInputError(
            f"{where} {list(value)} must have 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (fractions of the frame)"
        )
    return box


def region_from_dict(spec: Any, num_frames: int, where: str = "region") -> Region:
    """{"prompt": str, "box": [x0, y0, x1, y1], "end_box": [...] (optional: the box of the last
    frame, reached linearly)} -> Region with one box per frame."""
    if not isinstance(spec, dict) or not isinstance(spec.get("prompt"), str) or not spec["prompt"].strip():
        raise KumoInputError(f'{where} must be {{"prompt": "...", "box": [x0, y0, x1, y1]}}; got {spec!r}')
    unknown = sorted(set(spec) - {"prompt", "box", "end_box"})
    if unknown:
        raise KumoInputError(f"{where} has unknown keys {', '.join(unknown)}; it takes prompt, box and end_box")
    start = _box(spec.get("box"), f"{where}'s box")
    end = _box(spec["end_box"], f"{where}'s end_box") if spec.get("end_box") is not None else start
    t = np.linspace(0.0, 1.0, num_frames)[:, None] if num_frames > 1 else np.zeros((1, 1))
    return Region(spec["prompt"], start + (end - start) * t)


def check_regions(regions: Any, num_prompts: int, num_frames: int) -> list[list[Region]] | None:
    """The call's `regions` as one list of Regions per prompt: a list of region dicts (every
    prompt the same layout) or a list with one such list per prompt (an empty one: no layout
    for that prompt). One line naming what is wrong otherwise."""
    if regions is None:
        return None
    if not isinstance(regions, (list, tuple)) or not regions:
        raise KumoInputError("regions must be a non-empty list of {prompt, box} dicts, or one such list per prompt")
    per_prompt = regions if all(isinstance(r, (list, tuple)) for r in regions) else [regions] * num_prompts
    if len(per_prompt) != num_prompts:
        raise KumoInputError(f"regions has {len(per_prompt)} layouts for {num_prompts} prompts; give one per prompt")
    return [
        [region_from_dict(r, num_frames, f"regions[{i}][{k}]") for k, r in enumerate(layout)]
        for i, layout in enumerate(per_prompt)
    ]


def check_layout_inputs(
    regions: Any, layout: Any, planner: str | None, num_prompts: int, num_frames: int, conditioned: bool
) -> None:
    """The call's `regions` and `layout` switch, before any work."""
    if layout is not None and not isinstance(layout, bool):
        raise KumoInputError(f"layout must be True, False or None (the checkpoint's choice), not {layout!r}")
    if layout is True and planner is None and regions is None:
        raise KumoInputError(
            "layout=True needs a layout planner, and this checkpoint names none (kumo_defaults.json 'layout'); "
            "pass regions= with boxes instead"
        )
    if regions is not None and conditioned:
        raise KumoInputError("regions do not combine with conditioning frames (image=); pass one or the other")
    check_regions(regions, num_prompts, num_frames)


def clip_seeds(generator: Any, batch_size: int) -> list[int]:
    """A seed per clip for its planned layout, without drawing from the generators (their
    streams stay the noise's): each generator's own seed (one generator: its seed + the clip's
    index); without one, fresh seeds."""
    if isinstance(generator, (list, tuple)):
        return [int(g.initial_seed()) for g in generator]
    if generator is not None:
        return [int(generator.initial_seed()) + i for i in range(batch_size)]
    return [int(s) for s in torch.randint(0, 2**31 - 1, (batch_size,))]


def layout_prompts(
    layouts: Sequence[Sequence[Region]], prompts: Sequence[str], num_videos_per_prompt: int
) -> list[str]:
    """The K x B branch prompts, branch-major: branch k of clip b is its region k's prompt, or,
    past its regions, the clip's own prompt."""
    per_clip = [p for p in prompts for _ in range(num_videos_per_prompt)]
    branches = max(len(r) for r in layouts)
    return [
        layout[k].prompt if k < len(layout) else prompt
        for k in range(branches)
        for layout, prompt in zip(layouts, per_clip)
    ]


def planned_regions(
    planner: str | None, prompts: Sequence[str], seeds: Sequence[int], width: int, height: int, num_frames: int
) -> list[list[Region]]:
    """The checkpoint's planner's layout of each prompt (an empty list where it has none),
    drawn from the prompt's seed: the same seed, the same layout."""
    if planner is None:
        return [[] for _ in prompts]
    plan = resolve_planner(planner)
    layouts = []
    for prompt, seed in zip(prompts, seeds):
        planned = plan(prompt, np.random.default_rng([seed, 4242]), width, height, num_frames) or []
        layouts.append([Region(text, np.asarray(boxes, dtype=np.float64)) for text, boxes in planned])
    return layouts


def resolve_planner(name: str) -> Callable[..., list | None]:
    """The function kumo_defaults.json's `layout` names, "module:function" inside kumovideo
    (named, not imported here, as diffusers' model_index.json names its classes: the planner
    belongs to the world the checkpoint was trained on, not to the pipeline). It takes
    (prompt, numpy Generator, width, height, num_frames) and returns [(region prompt, (F, 4)
    boxes as fractions of the frame)], or None for a prompt it does not lay out."""
    module_name, _, function = str(name).partition(":")
    if not (module_name.startswith("kumovideo.") and function):
        raise KumoInputError(
            f"kumo_defaults.json's layout {name!r} is not 'kumovideo.<module>:<function>'; fix or remove the key"
        )
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError):
        raise KumoInputError(
            f"kumo_defaults.json's layout planner {name!r} is not in this version of kumovideo; remove the key "
            "or upgrade kumovideo"
        ) from None


# --------------------------------------------------------------------------- masks


def region_map(regions: Sequence[Region], geometry: ClipGeometry, num_frames: int, height: int, width: int):
    """(F_lat, 1, h, w) long: the region each latent pixel belongs to, -1 outside every box.
    Whole tokens (patch x patch latent pixels) are assigned, the ones a box (widened by
    BOX_MARGIN_PX) touches in any frame of the latent frame; a token two boxes touch goes to
    the box whose centre is nearer."""
    cell_x = geometry.spatial * geometry.patch / width  # one token's side as a fraction of the frame
    cell_y = geometry.spatial * geometry.patch / height
    rows, cols = height // (geometry.spatial * geometry.patch), width // (geometry.spatial * geometry.patch)
    latent_frames = (num_frames - 1) // geometry.temporal + 1
    owner = torch.full((latent_frames, rows, cols), -1, dtype=torch.long)
    nearest = torch.full((latent_frames, rows, cols), math.inf, dtype=torch.float64)
    lo_x = torch.arange(cols, dtype=torch.float64) * cell_x
    lo_y = torch.arange(rows, dtype=torch.float64) * cell_y
    mid_x, mid_y = lo_x + cell_x / 2, lo_y + cell_y / 2
    widen_x, widen_y = BOX_MARGIN_PX / width, BOX_MARGIN_PX / height
    margin = torch.tensor([-widen_x, -widen_y, widen_x, widen_y], dtype=torch.float64)
    for k, region in enumerate(regions):
        boxes = torch.as_tensor(region.boxes, dtype=torch.float64) + margin
        for f in range(latent_frames):
            # latent frame 0 is frame 0 alone; latent frame f >= 1 covers frames T(f-1)+1 .. Tf
            first, last = (0, 0) if f == 0 else (geometry.temporal * (f - 1) + 1, geometry.temporal * f)
            span = boxes[first : min(last, len(boxes) - 1) + 1]
            x0, y0 = span[:, 0].min(), span[:, 1].min()
            x1, y1 = span[:, 2].max(), span[:, 3].max()
            touches = ((lo_y + cell_y > y0) & (lo_y < y1))[:, None] & ((lo_x + cell_x > x0) & (lo_x < x1))[None, :]
            centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
            distance = (mid_x[None, :] - centre_x) ** 2 + (mid_y[:, None] - centre_y) ** 2
            take = touches & (distance < nearest[f])
            owner[f][take], nearest[f][take] = k, distance[take]
    p = geometry.patch
    return owner.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None]  # (F_lat, 1, h, w)


# --------------------------------------------------------------------------- sampling


class RegionComposer:
    """One call's regional sampling over a batch of B clips with K branches each: branch k of
    clip b draws region k of that clip's layout, or, past the clip's own regions, its whole
    prompt (a pad: clips of one batch may have layouts of different sizes; a clip with none
    is K copies of its prompt, i.e. plain sampling).

    `branch_inputs(x, t)` gives the K x B model inputs (branch-major, as the prompts are laid
    out); `combine(v, x, t)` the B predictions, each pixel from its region's branch, outside
    every box from the pads (else the mean of the branches)."""

    def __init__(
        self,
        maps: torch.Tensor,
        counts: Sequence[int],
        alphas_cumprod: torch.Tensor,
        fill_until: float,
        patch: int = 2,
    ):
        self.maps = maps  # (B, F_lat, 1, h, w) long, -1 outside every box
        self.counts = list(counts)  # regions of each clip
        self.branches = max(max(self.counts), 1)
        self.alphas_cumprod = alphas_cumprod
        self.fill_until = fill_until  # steps with t above this show each branch only its own region, centred
        self.outside = maps < 0
        # own[k, b]: where branch k of clip b draws (a pad: outside every box)
        own = []
        for k in range(self.branches):
            pads = torch.tensor([k >= n for n in self.counts]).view(-1, 1, 1, 1, 1)
            own.append(torch.where(pads, self.outside, maps == k))
        self.own = torch.stack(own)  # (K, B, F_lat, 1, h, w)
        self.has_layout = torch.tensor([n > 0 for n in self.counts]).view(-1, 1, 1, 1, 1)
        self.pad_weight = torch.stack(
            [torch.tensor([float(k >= n) for n in self.counts]) for k in range(self.branches)]
        )
        self.background = None  # (B, F_lat, C, 1, 1): the last step's clean background
        self.noise = None
        self.shifts = self._centring_shifts(patch)  # (K, B, 2)
        self.unwrapped = self._unwrapped()  # (K, B, 1, 1, h, w)

    def _unwrapped(self) -> torch.Tensor:
        """Where each branch's prediction, rolled back, did not wrap around the frame's edge."""
        h, w = self.maps.shape[-2:]
        rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
        masks = torch.zeros(self.branches, len(self.counts), 1, 1, h, w, dtype=torch.bool)
        for k in range(self.branches):
            for b in range(len(self.counts)):
                dy, dx = (int(s) for s in self.shifts[k, b])
                masks[k, b, 0, 0] = ((rows + dy >= 0) & (rows + dy < h)) & ((cols + dx >= 0) & (cols + dx < w))
        return masks

    def _centring_shifts(self, patch: int) -> torch.Tensor:
        """(K, B, 2) latent-pixel shifts (rows, cols), whole tokens, that move each region's
        centre to the frame's centre (pads: none)."""
        h, w = self.maps.shape[-2:]
        rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
        cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
        shifts = torch.zeros(self.branches, len(self.counts), 2, dtype=torch.long)
        for k in range(self.branches):
            for b in range(len(self.counts)):
                mask = (self.maps[b] == k)[:, 0]  # (F_lat, h, w)
                if not mask.any():
                    continue
                centre = torch.stack([rows.expand_as(mask)[mask].mean(), cols.expand_as(mask)[mask].mean()])
                offset = torch.tensor([(h - 1) / 2, (w - 1) / 2], dtype=torch.float64) - centre
                shifts[k, b] = (offset / patch).round().long() * patch
        return shifts

    def _deciding(self, t: torch.Tensor) -> bool:
        """Whether step t is one of the first steps, which decide the layout."""
        return float(t) > self.fill_until

    def _rolled(self, tensors: torch.Tensor, k: int, sign: int, t: torch.Tensor) -> torch.Tensor:
        """(B, ...) branch k's tensors rolled by its clips' shifts (sign -1: back) while the
        layout is being decided; as they are after."""
        if not self._deciding(t):
            return tensors
        return torch.stack(
            [
                torch.roll(tensors[b], tuple(int(sign * s) for s in self.shifts[k, b]), dims=(-2, -1))
                for b in range(len(tensors))
            ]
        )

    def _noised_background(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.noise is None:  # one fixed draw, so that the fill does not flicker between steps
            self.noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x)
        a = self.alphas_cumprod[int(t)].to(x)
        return a.sqrt() * self.background.to(x).expand_as(x) + (1 - a).sqrt() * self.noise

    def branch_inputs(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(K*B, F_lat, C, h, w): each branch's view of x (B, F_lat, C, h, w)."""
        if self.background is None:  # the first step: nothing predicted yet
            return torch.cat([self._rolled(x, k, 1, t) for k in range(self.branches)])
        fill = self._noised_background(x, t)
        views = []
        for k in range(self.branches):
            other_regions = ~self.outside & ~self.own[k]
            hidden = ~self.own[k] if self._deciding(t) else other_regions
            views.append(self._rolled(torch.where(hidden & self.has_layout.to(x.device), fill, x), k, 1, t))
        return torch.cat(views)

    def combine(self, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, ...) prediction from the branches' (K*B, ...), and the background estimate for the next step."""
        v = v.unflatten(0, (self.branches, -1))  # (K, B, ...)
        v = torch.stack([self._rolled(v[k], k, -1, t) for k in range(self.branches)])
        pads = self.pad_weight.to(v).view(self.branches, -1, 1, 1, 1, 1)
        has_pad = pads.sum(0) > 0
        # outside every box: the mean of the branches whose view held the pixel unwrapped
        weight = self.unwrapped.to(v) if self._deciding(t) else torch.ones_like(v[:, :, :1, :1])
        mean = torch.where(weight.sum(0) > 0, (v * weight).sum(0) / weight.sum(0).clamp(min=1), v.mean(0))
        outside = torch.where(has_pad, (v * pads).sum(0) / pads.sum(0).clamp(min=1), mean)
        combined = outside
        for k in range(self.branches):  # a pad's k is past its clip's regions: no pixel has it
            combined = torch.where((self.maps == k).to(v.device), v[k], combined)
        x0 = v_to_x0(combined, x.float(), self.alphas_cumprod[int(t)].to(x.device).float())
        self.background = _median_outside(x0, self.outside.to(x.device))
        return combined


def _median_outside(x0: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """(B, F_lat, C, 1, 1): the median of x0 (B, F_lat, C, h, w) over the pixels outside every
    box (over all pixels where there are none)."""
    b, f, c = x0.shape[:3]
    mask = outside.expand_as(x0).flatten(3)
    mask = torch.where(mask.any(-1, keepdim=True), mask, torch.ones_like(mask))
    values = torch.where(mask, x0.flatten(3), torch.full_like(x0.flatten(3), float("nan")))
    return values.nanmedian(-1).values.view(b, f, c, 1, 1)
