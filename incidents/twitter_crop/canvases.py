"""Paired canvases as Twitter's binary saw them: joined, resized as a whole, scored, read.

The protocol (Yee et al. 2021) pastes two photos side by side, top-aligned on black, and the
binary resizes the **whole canvas** to fit 320x320 before the network (:mod:`.model`). Each trial
therefore needs the network on a fresh canvas. :class:`Layout` makes that cheap without changing
the result: when both photos have one height and the seam lands on the 16-pixel grid after the
resize (every FairFace pair), the canvas's resized input equals each photo's own columns of the
canvas's resize weights except in a few columns around the seam, so one pass per photo and
position plus a recomputed seam band (:class:`~.seam.SeamCanvas`) gives the canvas's score grid
exactly (tested against :func:`.model.score_grid` on the joined canvas). Other canvases run a full pass.

This is the binary's pipeline in float arithmetic. The binary also read each canvas from a JPEG
file (Twitter's notebook saved it with PIL's defaults) and rounded its resize to bytes;
:func:`binary_winner` runs that exact path, and the investigation measures how often the two agree.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from autopsy import threads
from incidents.twitter_crop import model
from incidents.twitter_crop.seam import SeamCanvas


def join(left: Image.Image, right: Image.Image) -> Image.Image:
    """The paper's canvas: ``left`` then ``right``, top-aligned on black, as tall as the taller."""
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def fixed_height(image: Image.Image, height: int) -> Image.Image:
    """The paper's "fixed height" setting: ``int(w * height / h)`` wide, Pillow's default (bicubic) filter."""
    return image.resize((max(1, int(image.width * height / image.height)), height), Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float32 RGB in 0-255."""
    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]


@dataclass(frozen=True)
class Layout:
    """How the binary resizes a canvas of a ``left`` and a ``right`` photo, both (width, height)."""

    left: tuple[int, int]
    right: tuple[int, int]

    @functools.cached_property
    def size(self) -> tuple[int, int]:
        return self.left[0] + self.right[0], max(self.left[1], self.right[1])

    @functools.cached_property
    def resized(self) -> tuple[int, int]:
        return model.fit_size(*self.size)

    @functools.cached_property
    def halvings(self) -> int:
        """How many 2x2 averages precede the filter (as in :func:`.model.resize_tensor`)."""
        (w, h), (tw, th), k = self.size, self.resized, 0
        while w // 2 >= tw and h // 2 >= th:
            w, h, k = w // 2, h // 2, k + 1
        return k

    @functools.cached_property
    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The canvas's resize matrices (rows: resized pixels; columns: halved canvas pixels), x and y."""
        (w, h), k = self.size, self.halvings
        for _ in range(k):
            w, h = w // 2, h // 2
        return model.resize_matrix(w, self.resized[0]), model.resize_matrix(h, self.resized[1])

    @functools.cached_property
    def seam(self) -> int | None:
        """The seam in resized columns, if the fast path is exact for this layout; else None."""
        (wl, hl), (wr, hr), k = self.left, self.right, self.halvings
        halved_left, halved_width = wl >> k, self.weights[0].shape[1]
        if hl != hr or wl % (1 << k) or (halved_left * self.resized[0]) % halved_width:
            return None
        seam = halved_left * self.resized[0] // halved_width
        ok = seam % model.STRIDE == 0 and (self.resized[0] - seam) % model.STRIDE == 0 and seam > 0
        return seam if ok and seam < self.resized[0] else None

    @functools.cached_property
    def band(self) -> int:
        """Resized columns on each side of the seam whose filter taps reach across it."""
        mx, cut = self.weights[0], self.left[0] >> self.halvings
        mixed = np.flatnonzero((mx[:, :cut] != 0).any(1).numpy() & (mx[:, cut:] != 0).any(1).numpy())
        return 0 if mixed.size == 0 else int(max(self.seam - mixed.min(), mixed.max() + 1 - self.seam))

    @functools.cached_property
    def taps(self) -> tuple[int, int]:
        """Halved-canvas columns [a, b) that the band's rows read."""
        rows = self.weights[0][self.seam - self.band:self.seam + self.band]
        used = np.flatnonzero((rows != 0).any(0).numpy())
        return int(used.min()), int(used.max()) + 1

    def halve(self, rgb: torch.Tensor) -> torch.Tensor:
        for _ in range(self.halvings):
            rgb = F.avg_pool2d(rgb, 2)
        return rgb

    def photo_input(self, rgb: torch.Tensor, side: str) -> torch.Tensor:
        """One photo's part of the canvas's network input (columns inside the band are not final)."""
        (mx, my), cut = self.weights, self.left[0] >> self.halvings
        cols = mx[:self.seam, :cut] if side == "left" else mx[self.seam:, cut:]
        return model.to_network_input(my @ (self.halve(rgb) @ cols.T))

    def alone_input(self, rgb: torch.Tensor, side: str) -> torch.Tensor:
        """One photo resized alone at the canvas's scale: the canvas's input in that photo's columns
        outside the band, whichever side the photo is on (to float rounding: the canvas's filter
        positions for the right photo are offset by the seam)."""
        halved = self.halve(rgb)
        out = self.seam if side == "left" else self.resized[0] - self.seam
        return model.to_network_input(self.weights[1] @ (halved @ model.resize_matrix(halved.shape[-1], out).T))

    def alone_key(self, side: str) -> tuple:
        """What :meth:`alone_input` depends on besides the photo (one pass serves both sides of a
        canvas of two same-size photos)."""
        size = self.left if side == "left" else self.right
        return size, self.size[1], self.resized, self.seam if side == "left" else self.resized[0] - self.seam

    def strip(self, left_halved: torch.Tensor, right_halved: torch.Tensor) -> torch.Tensor:
        """The canvas's exact network input in the columns [seam - band, seam + band)."""
        return self.strips(self.strip_part(left_halved, "left"), self.strip_part(right_halved, "right"))

    def strip_part(self, halved: torch.Tensor, side: str) -> torch.Tensor:
        """The halved columns of one photo that the band's filter taps read (its last or first few)."""
        (a, b), cut = self.taps, self.left[0] >> self.halvings
        return halved[..., a:cut] if side == "left" else halved[..., :b - cut]

    def strips(self, left_parts: torch.Tensor, right_parts: torch.Tensor) -> torch.Tensor:
        """:meth:`strip` of a batch of canvases from their photos' :meth:`strip_part` (N, 3, h, .)."""
        (mx, my), (a, b) = self.weights, self.taps
        rows = mx[self.seam - self.band:self.seam + self.band, a:b]
        return model.to_network_input(my @ (torch.cat([left_parts, right_parts], dim=-1) @ rows.T))

    def cell_x(self) -> np.ndarray:
        """Each grid column's point in canvas pixels as the binary prints it (``int()`` of float32)."""
        xs, _, _ = model.grid_geometry(self.size, self.resized)
        return xs.astype(np.int64)


@dataclass(frozen=True)
class Outcome:
    """What one canvas's score grid says, by three rules (the last two are beyond the paper)."""

    left_wins_max: bool  # the paper's rule: the binary's salient point lies in the left photo
    left_wins_mean: bool  # mean score of the cells whose point lies in each photo
    left_wins_sum: bool  # total score of those cells
    point: tuple[int, int]  # the salient point, canvas pixels


def outcome(scores: np.ndarray, layout: Layout) -> Outcome:
    """Read a canvas's grid as the paper did: which photo holds the binary's salient point."""
    cell_x = layout.cell_x()
    _, ys, _ = model.grid_geometry(layout.size, layout.resized)
    flat = np.where(np.isnan(scores), -np.inf, scores).ravel()
    row, col = divmod(int(np.argmax(flat)), scores.shape[1])
    on_left = cell_x < layout.left[0]
    left, right = scores[:, on_left], scores[:, ~on_left]
    return Outcome(bool(on_left[col]), bool(left.mean() > right.mean()), bool(left.sum() > right.sum()),
                   (int(cell_x[col]), int(ys[row])))


class CanvasScorer:
    """Score grids of many ``[left | right]`` canvases through the binary's pipeline.

    ``photos`` maps ids to PIL images (already at the setting's size); each photo's pass is computed
    once per scale (:meth:`Layout.alone_input`: on either side of the seam, the seam band replaces
    the columns where the photos meet) and reused by every trial it appears in, and each canvas's
    grid once (trials drawn with replacement repeat a tenth of their canvases).
    """

    #: Hand freed heap back every this many photo passes (they leave small pieces pinning large frees).
    TRIM_EVERY = 32

    def __init__(self, network, photos: dict):
        self.network, self.photos = network, photos
        self._passes: dict = {}  # (photo, Layout.alone_key) -> its ImagePass
        self._parts: dict = {}  # (photo, layout, side) -> the few halved columns the seam band reads
        self._grids: dict = {}  # (left, right) -> the canvas's score grid
        self._pooled: dict = {}  # photo -> spatial means of its layers (probe features)
        self._seams: dict = {}

    def tensor(self, i) -> torch.Tensor:
        return to_tensor(self.photos[i])  # not kept: a few ms to redo, 2.4 MB a photo to keep

    def layout(self, a, b) -> Layout:
        return Layout(self.photos[a].size, self.photos[b].size)

    def _seam(self, layout: Layout) -> SeamCanvas:
        if layout not in self._seams:
            layers = self.network.layers
            self._seams[layout] = SeamCanvas(layers[:-1], layers[-1], input_band=layout.band)
        return self._seams[layout]

    def _pass(self, i, layout: Layout, side: str):
        key = (i, layout.alone_key(side))
        if key not in self._passes:
            self._passes[key] = self._seam(layout).image_pass(layout.alone_input(self.tensor(i), side))
            if len(self._passes) % self.TRIM_EVERY == 0:
                threads.release_freed_memory()
        return self._passes[key]

    def _part(self, i, layout: Layout, side: str) -> torch.Tensor:
        key = (i, layout, side)
        if key not in self._parts:  # halving the photo for every canvas took a fifth of the trials
            self._parts[key] = layout.strip_part(layout.halve(self.tensor(i)), side).clone()
        return self._parts[key]

    @torch.inference_mode()
    def grids(self, left_ids, right_ids) -> list[np.ndarray]:
        """The score grid of each canvas ``[left_ids[k] | right_ids[k]]`` (batched by layout)."""
        groups: dict = {}
        for a, b in dict.fromkeys(zip(left_ids, right_ids)):  # each new canvas once, in order
            if (a, b) not in self._grids:
                groups.setdefault(self.layout(a, b), []).append((a, b))
        for layout, canvases in groups.items():
            lefts, rights = [a for a, _ in canvases], [b for _, b in canvases]
            self._grids.update(zip(canvases, self._layout_grids(layout, lefts, rights)))
        return [self._grids[a, b] for a, b in zip(left_ids, right_ids)]

    def _layout_grids(self, layout: Layout, lefts, rights) -> list[np.ndarray]:
        if layout.seam is None:  # the fast path is not exact here: the whole canvas, as the binary runs it
            return [model.score_grid(to_tensor(join(self.photos[a], self.photos[b])), model=self.network)[0, 0].numpy()
                    for a, b in zip(lefts, rights)]
        seam = self._seam(layout)
        passes_l = [self._pass(a, layout, "left") for a in lefts]
        passes_r = [self._pass(b, layout, "right") for b in rights]
        strip = None
        if layout.band:
            strip = layout.strips(torch.cat([self._part(a, layout, "left") for a in lefts]),
                                  torch.cat([self._part(b, layout, "right") for b in rights]))
        return list(seam.canvas_maps(passes_l, passes_r, strip).numpy())

    def pooled(self, i, layer: str) -> np.ndarray:
        """Photo ``i``'s spatial mean of ``layer``'s output, as the network sees the photo on a canvas's left
        (beside a photo of its own size); alone at the binary's size where that canvas has no fast path."""
        if i not in self._pooled:
            layout, layers = self.layout(i, i), self.network.layers
            if layout.seam is not None:
                x = layout.photo_input(self.tensor(i), "left")
                found = self._seam(layout).image_pass(x, edges="none")
            else:
                found = SeamCanvas(layers[:-1], layers[-1]).image_pass(model.preprocess(self.photos[i], resize=True),
                                                                       edges="none")
            self._pooled[i] = found.pooled
        return self._pooled[i][layer].numpy()

    def forget(self) -> None:
        """Drop cached passes (between settings) and hand freed memory back."""
        self._passes.clear()
        self._parts.clear()
        self._grids.clear()
        self._pooled.clear()
        threads.release_freed_memory()


def pair(network, left: Image.Image, right: Image.Image) -> tuple[model.SaliencyGrid, Outcome]:
    """One ``[left | right]`` canvas as the run scores it: its score grid (with the binary's cell points,
    for overlays) and which photo wins. The explorer and bring-your-own use this very path."""
    scorer = CanvasScorer(network, {"left": left, "right": right})
    (scores,) = scorer.grids(["left"], ["right"])
    layout = scorer.layout("left", "right")
    xs, ys, ratio = model.grid_geometry(layout.size, layout.resized)
    return model.SaliencyGrid(scores, xs, ys, layout.size, layout.resized, ratio), outcome(scores, layout)


def binary_winner(left: Image.Image, right: Image.Image) -> tuple[bool, tuple[int, int]]:
    """The exact path of Twitter's notebook: the canvas saved as a JPEG with PIL's defaults (quality
    75), read back by the binary's decoder and byte-rounded resize. Returns (left wins, salient point)."""
    canvas = join(left, right)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "canvas.jpg"
        canvas.save(path)
        point = model.saliency_map(path).point
    return point[0] < left.width, point
