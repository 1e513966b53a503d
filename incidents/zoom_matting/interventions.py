"""One factor at a time: the edits the simulation applies before segmenting a photo again.

- ``exposure``: darker and brighter scenes, in stops of linear light (``counterfactual.edit_exposure``);
- ``skin_tone``: the skin of the head moved to a Monk Skin Tone level, measured by ITA
  (``counterfactual.edit_skin_tone``; skin found by the YCrCb heuristic inside the head region);
- ``background``: the photo's background replaced by a flat colour near the measured skin colour, one
  far from it, dark and light grey, or a busy virtual-background-like image. What counts as
  background comes from the model's own mask of the original photo, dilated, and never includes the
  head region (otherwise a head the model already erased would be painted over);

plus :func:`composite`, what a conferencing app shows: the person mask composited onto a chosen
background image.

The face box used to measure coverage is always the one detected on the unedited photo, so the
curves move with the segmenter alone, not with the face detector.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from autopsy import counterfactual

#: Flat background colours (sRGB 0-255); "near_skin" and "far_colour" are measured per photo.
GREYS = {"dark_grey": (60, 60, 60), "light_grey": (200, 200, 200)}
#: Candidates for the colour far from skin: the one with the largest CIELAB distance is used.
FAR_PALETTE = {"blue": (0, 90, 200), "green": (0, 158, 115), "cyan": (0, 190, 220), "purple": (120, 40, 170)}
BACKGROUND_LABELS = {
    "near_skin": "flat colour near the skin", "far_colour": "flat colour far from the skin",
    "dark_grey": "dark grey", "light_grey": "light grey", "virtual_image": "busy room image",
}


def head_region(box, shape) -> tuple[float, float, float, float]:
    """The face box grown to the whole head (hair, ears, chin), clipped to the image: 35% of the
    box width on each side, 60% of its height above and 25% below."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    height, width = shape[:2]
    return (max(0.0, x0 - 0.35 * w), max(0.0, y0 - 0.6 * h), min(float(width), x1 + 0.35 * w),
            min(float(height), y1 + 0.25 * h))


def _box_mask(box, shape) -> np.ndarray:
    from incidents.zoom_matting.measure import box_slices

    out = np.zeros(shape[:2], dtype=bool)
    rows, cols = box_slices(box, shape)
    out[rows, cols] = True
    return out


def keep_region(mask: np.ndarray, box, *, dilation: int = 15, threshold: float = 0.5) -> np.ndarray:
    """Pixels kept from the original photo when its background is replaced: the model's person mask
    (>= ``threshold``) dilated by ``dilation`` pixels, plus the head region."""
    person = np.asarray(mask) >= threshold
    if dilation > 0:  # a (2d+1)-pixel square: the same as d binary dilations by a 3x3 square, in one pass
        person = ndimage.maximum_filter(person, size=2 * dilation + 1, mode="constant", cval=False)
    return person | _box_mask(head_region(box, person.shape), person.shape)


def skin_colour(image: Image.Image, box) -> tuple[tuple[int, int, int], int]:
    """Median sRGB colour of the skin pixels inside the face box, and how many there were. When
    the heuristic finds fewer than 50 (it under-detects very dark and very light skin), the median
    of the box's central half is used instead and the count is 0."""
    rgb = np.asarray(image)
    skin = counterfactual.skin_mask(image, region=box)
    if skin.sum() >= 50:
        return tuple(int(v) for v in np.median(rgb[skin], axis=0)), int(skin.sum())
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    centre = _box_mask((x0 + w / 4, y0 + h / 4, x1 - w / 4, y1 - h / 4), rgb.shape)
    return tuple(int(v) for v in np.median(rgb[centre], axis=0)), 0


def far_colour(colour) -> tuple[tuple[int, int, int], str]:
    """Of :data:`FAR_PALETTE`, the colour with the largest CIELAB distance (Delta E 1976) from ``colour``."""
    lab = counterfactual.srgb_to_lab(np.asarray(colour) / 255)
    name = max(FAR_PALETTE, key=lambda k: np.linalg.norm(counterfactual.srgb_to_lab(np.asarray(FAR_PALETTE[k]) / 255) - lab))
    return FAR_PALETTE[name], name


def virtual_background(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """A generated 'room' (no photograph): a lit wall with a window, a bookshelf and a lamp's glow."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    wall = np.stack([0.82 - 0.25 * y, 0.74 - 0.25 * y, 0.62 - 0.2 * y], -1)
    glow = np.exp(-((x - 0.8) ** 2 + (y - 0.25) ** 2) / 0.05)[..., None] * np.array([0.18, 0.14, 0.05])
    img = np.clip(wall + glow, 0, 1)
    img[int(0.08 * height):int(0.45 * height), int(0.05 * width):int(0.35 * width)] = (0.72, 0.85, 0.95)
    shelf_x0, shelf_x1 = int(0.62 * width), int(0.97 * width)
    for row in range(3):
        top = int((0.5 + 0.16 * row) * height)
        img[top + int(0.13 * height):top + int(0.15 * height), shelf_x0:shelf_x1] = (0.35, 0.22, 0.12)
        left = shelf_x0
        while left < shelf_x1 - 4:
            w = int(rng.integers(max(2, width // 80), max(3, width // 30)))
            h = int(rng.uniform(0.08, 0.13) * height)
            img[top + int(0.13 * height) - h:top + int(0.13 * height), left:min(left + w, shelf_x1)] = rng.uniform(0.1, 0.9, 3)
            left += w + 1
    return Image.fromarray(np.round(img * 255).astype(np.uint8))


def composite(image: Image.Image, mask: np.ndarray, background: Image.Image, *, threshold: float | None = 0.5):
    """What the call shows: the person mask composited onto ``background`` (resized to the photo).
    ``threshold=0.5`` binarises the mask, as conferencing apps do; ``None`` blends softly."""
    alpha = np.asarray(mask, dtype=np.float64)
    alpha = (alpha >= threshold) if threshold is not None else alpha
    bg = background.resize(image.size, resample=Image.BILINEAR) if background.size != image.size else background
    edited, _ = counterfactual.replace_background(image, alpha, bg)
    return edited


def prepare(image: Image.Image, mask: np.ndarray, box, *, dilation: int = 15) -> dict:
    """What every edit of one photo needs, computed once: the region kept when the background is
    replaced, the skin colour (and the colour far from it) and the head's skin pixels."""
    skin, n_skin = skin_colour(image, box)
    return {"keep": keep_region(mask, box, dilation=dilation), "skin": skin, "n_skin_pixels": n_skin,
            "far": far_colour(skin),
            "head_skin": counterfactual.skin_mask(image, region=head_region(box, (image.height, image.width)))}


def edit(image: Image.Image, factor: str, level, *, mask: np.ndarray, box, dilation: int = 15, seed: int = 0,
         prepared: dict | None = None):
    """``image`` edited along ``factor`` to ``level``; returns ``(edited image, measured dict)``.

    Levels: ``exposure`` stops (0 is the original); ``skin_tone`` a Monk Skin Tone level 1-10;
    ``background`` a key of :data:`BACKGROUND_LABELS`. ``prepared`` is :func:`prepare`'s result
    (computed here when not given). Raises ValueError when the edit cannot be made (e.g. no skin
    found), so the caller counts the photo as skipped for that level.
    """
    if factor == "exposure":
        if level == 0:
            return image, {"achieved_stops": 0.0}
        edited, record = counterfactual.edit_exposure(image, stops=float(level))
        return edited, {"achieved_stops": record.measured["achieved_stops"],
                        "clipped_fraction": record.measured["clipped_fraction"]}
    prepared = prepared or prepare(image, mask, box, dilation=dilation)
    if factor == "skin_tone":
        skin = prepared["head_skin"]
        if skin.sum() < 100:
            raise ValueError(f"only {int(skin.sum())} skin pixels found in the head region")
        edited, record = counterfactual.edit_skin_tone(image, target=int(level), mask=skin)
        return edited, {"ita_before": record.measured["ita_before"], "ita_after": record.measured["ita_after"],
                        "delta_ita": record.measured["delta_ita"], "reached": record.warning is None}
    if factor == "background":
        keep, skin = prepared["keep"], prepared["skin"]
        if level == "near_skin":
            fill, name = skin, "skin"
        elif level == "far_colour":
            fill, name = prepared["far"]
        elif level in GREYS:
            fill, name = GREYS[level], level
        elif level == "virtual_image":
            fill, name = virtual_background(image.width, image.height, seed=seed), "room image"
        else:
            raise ValueError(f"unknown background {level!r}; choose one of {list(BACKGROUND_LABELS)}")
        edited, record = counterfactual.replace_background(image, keep, fill)
        lab_skin = counterfactual.srgb_to_lab(np.asarray(skin) / 255)
        out = {"replaced_fraction": float(1 - keep.mean()), "fill": name}
        if not isinstance(fill, Image.Image):
            out["delta_e_from_skin"] = float(np.linalg.norm(counterfactual.srgb_to_lab(np.asarray(fill) / 255) - lab_skin))
        return edited, out
    raise ValueError(f"unknown factor {factor!r}; choose exposure, skin_tone or background")
