"""Controlled counterfactual edits: skin tone, exposure, background, position.

Each edit returns ``(edited image, EditRecord)``; the record says what was asked and what the edited
image actually shows, measured after the edit (after clipping and 8-bit rounding). Images may be
``PIL.Image`` (RGB), uint8 arrays (H, W, 3) or float arrays in [0, 1]; the edit returns the same kind.

Skin tone is measured by the Individual Typology Angle, ITA = arctan((L* - 50) / b*) * 180 / pi in
CIELAB (Chardon, Cretois & Hourseau 1991, "Skin colour typology and suntanning pathways", Int. J.
Cosmetic Science 13; used for dermatology image sets by Kinyanjui et al. 2019, "Estimating skin tone
and effects on classification performance in dermatology datasets"). Named targets are the ten swatches
of the Monk Skin Tone scale (Monk 2019; published by Google as the MST scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

__all__ = [
    "EditRecord",
    "MONK_SKIN_TONES",
    "MST_ITA",
    "srgb_to_lab",
    "lab_to_srgb",
    "ita_map",
    "measure_ita",
    "skin_mask",
    "edit_skin_tone",
    "edit_exposure",
    "replace_background",
    "paired_canvas",
    "swap_positions",
]

# Monk Skin Tone scale, levels 1 (lightest) to 10 (darkest), as published by Google (skintone.google).
MONK_SKIN_TONES = {
    1: "#f6ede4", 2: "#f3e7db", 3: "#f7ead0", 4: "#eadaba", 5: "#d7bd96",
    6: "#a07e56", 7: "#825c43", 8: "#604134", 9: "#3a312a", 10: "#292420",
}

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])
_EPS = (6 / 29) ** 3


@dataclass(frozen=True)
class EditRecord:
    """What an edit was asked to do and what the edited image shows, measured after the edit."""

    edit: str
    requested: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    pixels_changed: int | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, (np.floating, float)):
                return float(v)
            if isinstance(v, (np.integer, np.bool_)):
                return v.item()
            if isinstance(v, (tuple, list)):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            return v

        return {"edit": self.edit, "requested": clean(self.requested), "measured": clean(self.measured),
                "pixels_changed": self.pixels_changed, "warning": self.warning}


# ------------------------------------------------------------------ colour science


def _linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _encode(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0, 1)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) to CIELAB (..., 3), D65 white, 2-degree observer."""
    xyz = _linear(np.asarray(rgb, dtype=np.float64)) @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _lab_to_linear(lab) -> np.ndarray:
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65
    return xyz @ np.linalg.inv(_SRGB_TO_XYZ).T


def lab_to_srgb(lab) -> np.ndarray:
    """CIELAB (..., 3) to sRGB in [0, 1], D65; out-of-gamut colours are clipped."""
    return _encode(_lab_to_linear(lab))


def _ita(lab: np.ndarray) -> np.ndarray:
    # arctan2 equals arctan((L - 50) / b) for b* > 0 (all skin) and stays defined at b* = 0
    return np.degrees(np.arctan2(lab[..., 0] - 50, lab[..., 2]))


def _hex_rgb(h: str) -> np.ndarray:
    h = h.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)]) / 255


MST_ITA = {level: float(_ita(srgb_to_lab(_hex_rgb(h)))) for level, h in MONK_SKIN_TONES.items()}


# ------------------------------------------------------------------ image plumbing


def _to_float(image) -> tuple[np.ndarray, str]:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode!r}; use image.convert('RGB')")
        return np.asarray(image, dtype=np.float64) / 255, "pil"
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3); got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255, "uint8"
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"image arrays must be uint8 or float in [0, 1]; got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"float images must lie in [0, 1]; got range [{arr.min():.3g}, {arr.max():.3g}]")
    return arr.astype(np.float64), "float"


def _from_float(arr: np.ndarray, kind: str):
    if kind == "float":
        return arr
    u8 = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(u8) if kind == "pil" else u8


def _mask(mask, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} does not match the image's (H, W) = {shape}")
    return m.astype(bool) if m.dtype == bool else m > (127 if m.dtype == np.uint8 else 0.5)


# ------------------------------------------------------------------ skin tone


def ita_map(image) -> np.ndarray:
    """Per-pixel ITA in degrees, (H, W)."""
    return _ita(srgb_to_lab(_to_float(image)[0]))


def measure_ita(image, mask=None) -> float:
    """Median ITA (degrees) of the pixels in ``mask`` (all pixels if None). Higher is lighter:
    > 55 very light, 41-55 light, 28-41 intermediate, 10-28 tan, -30-10 brown, < -30 dark (Chardon 1991)."""
    itas = ita_map(image)
    if mask is not None:
        itas = itas[_mask(mask, itas.shape)]
    if itas.size == 0:
        raise ValueError("the mask selects no pixels; pass a mask with some skin in it")
    return float(np.median(itas))


def skin_mask(image, *, region=None) -> np.ndarray:
    """Heuristic skin mask (H, W) bool: the YCrCb rule of Chai & Ngan (1999), 77 <= Cb <= 127 and
    133 <= Cr <= 173 (BT.601, 8-bit), optionally limited to ``region`` = (left, top, right, bottom).

    Limits: a fixed chroma box tuned on a narrow set of faces. It under-detects very dark skin (low
    luminance compresses chroma) and very light or pink skin (Cr leaves the box), and it accepts
    skin-coloured wood, sand, hair and clothing. It is therefore biased along the very axis the lab
    measures; for measurements that matter pass your own mask (e.g. from a face-parsing model).
    """
    rgb = _to_float(image)[0] * 255
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    mask = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
    if region is not None:
        left, top, right, bottom = (int(round(v)) for v in region)
        box = np.zeros_like(mask)
        box[max(top, 0) : bottom, max(left, 0) : right] = True
        mask &= box
    return mask


def _target_ita(target_ita, target) -> float:
    if (target_ita is None) == (target is None):
        raise ValueError("give exactly one of target_ita= (degrees) or target= (a Monk Skin Tone level 1-10)")
    if target is not None:
        if target not in MST_ITA:
            raise ValueError(f"target must be a Monk Skin Tone level 1..10; got {target!r}")
        return MST_ITA[target]
    return float(target_ita)


def edit_skin_tone(image, *, target_ita=None, target=None, mask=None, tolerance: float = 1.0, max_iter: int = 10):
    """Shift skin to a target ITA (degrees, or a Monk Skin Tone level via ``target``).

    Inside ``mask`` (default: :func:`skin_mask`) every pixel's (b*, L* - 50) is rotated about
    (0, 50) by the same angle, keeping its distance from that point (the ITA radius) and a*, so the
    whole distribution of ITA moves by that angle and its median reaches the target. The angle is
    corrected until the median ITA measured on the returned image (after gamut clipping and 8-bit
    rounding) is within ``tolerance``. Pixels outside the mask are bit-identical to the input.
    """
    goal = _target_ita(target_ita, target)
    rgb, kind = _to_float(image)
    m = skin_mask(image) if mask is None else _mask(mask, rgb.shape[:2])
    if not m.any():
        raise ValueError("the skin mask is empty; pass mask= (the heuristic finds no skin in this image)")
    lab = srgb_to_lab(rgb[m])
    before = float(np.median(_ita(lab)))
    radius = np.hypot(lab[..., 2], lab[..., 0] - 50)
    angle = np.radians(_ita(lab))
    limit = np.radians(89.0)  # stay on the b* > 0 side: beyond +-90 degrees skin would turn blue

    delta = goal - before
    for _ in range(max_iter):
        theta = np.clip(angle + np.radians(delta), -limit, limit)
        new_lab = np.stack([50 + radius * np.sin(theta), lab[..., 1], radius * np.cos(theta)], -1)
        linear = _lab_to_linear(new_lab)
        out = rgb.copy()
        out[m] = _encode(linear)
        edited = _from_float(out, kind)
        after = measure_ita(edited, m)
        if abs(after - goal) <= tolerance:
            break
        delta += goal - after
    final = _to_float(edited)[0]
    final_lab = srgb_to_lab(final[m])
    measured = {
        "ita_before": before,
        "ita_after": after,
        "delta_ita": after - before,
        "mean_delta_L": float(np.mean(final_lab[..., 0] - lab[..., 0])),
        "mean_delta_b": float(np.mean(final_lab[..., 2] - lab[..., 2])),
        "mask_pixels": int(m.sum()),
        "clipped_fraction": float(np.mean(np.any((linear < 0) | (linear > 1), -1))),
    }
    warning = None
    if abs(after - goal) > tolerance:
        warning = (f"reached ITA {after:.1f}, not {goal:.1f} +- {tolerance}: the target lies outside the sRGB "
                   "gamut for these pixels")
    requested = {"target_ita": goal, "target_mst": target, "tolerance": tolerance}
    changed = int(np.any(final != rgb, -1).sum())
    return edited, EditRecord("skin_tone", requested, measured, changed, warning)


# ------------------------------------------------------------------ lighting, background, position


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return _linear(rgb) @ _SRGB_TO_XYZ[1]


def edit_exposure(image, *, stops: float):
    """Change exposure by ``stops`` (x 2**stops) in linear light, as a camera would; values pushed past
    white are clipped, and the clipped fraction is recorded with the achieved change in stops."""
    rgb, kind = _to_float(image)
    scaled = _linear(rgb) * 2.0**stops
    clipped = np.any(scaled > 1, -1) & ~np.any(rgb >= 1, -1)
    edited = _from_float(_encode(scaled), kind)
    out = _to_float(edited)[0]
    y0, y1 = _luminance(rgb).mean(), _luminance(out).mean()
    measured = {
        "mean_luminance_before": float(y0),
        "mean_luminance_after": float(y1),
        "achieved_stops": float(np.log2(y1 / y0)) if y0 > 0 and y1 > 0 else float("nan"),
        "clipped_fraction": float(clipped.mean()),
    }
    warning = f"{clipped.mean():.1%} of pixels clipped to white" if clipped.mean() > 0.01 else None
    return edited, EditRecord("exposure", {"stops": stops}, measured, int(np.any(out != rgb, -1).sum()), warning)


def replace_background(image, mask, background):
    """Soft alpha composite: ``mask`` * image + (1 - ``mask``) * background, in sRGB values as matting
    datasets do. ``mask`` is the foreground alpha (H, W): bool, float in [0, 1] or uint8 0-255;
    ``background`` is an image of the same size or an RGB colour (0-255 ints or 0-1 floats)."""
    rgb, kind = _to_float(image)
    alpha = np.asarray(mask)
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {alpha.shape} does not match the image's (H, W) = {rgb.shape[:2]}")
    alpha = alpha.astype(np.float64) / (255 if alpha.dtype == np.uint8 else 1)
    if isinstance(background, (tuple, list)) or (np.ndim(background) == 1):
        colour = np.asarray(background, dtype=np.float64)
        if colour.shape != (3,):
            raise ValueError(f"a background colour needs 3 values (R, G, B); got {background!r}")
        bg = np.broadcast_to(colour / (255 if colour.max() > 1 else 1), rgb.shape)
        requested = {"background": [float(c) for c in colour]}
    else:
        bg = _to_float(background)[0]
        if bg.shape != rgb.shape:
            raise ValueError(f"background size {bg.shape[:2]} differs from the image's {rgb.shape[:2]}; "
                             "resize it first")
        requested = {"background": "image"}
    edited = _from_float(alpha[..., None] * rgb + (1 - alpha[..., None]) * bg, kind)
    out = _to_float(edited)[0]
    measured = {"foreground_fraction": float(alpha.mean()), "mean_abs_change": float(np.abs(out - rgb).mean())}
    return edited, EditRecord("background", requested, measured, int(np.any(out != rgb, -1).sum()))


def paired_canvas(first, second, *, axis: str = "vertical", gap: int = 0, fill=(255, 255, 255)):
    """Put two images on one canvas, ``first`` on top (vertical) or left (horizontal), the smaller one
    centred on the other axis, ``gap`` pixels of ``fill`` between them. The record holds both boxes
    (left, top, right, bottom) so crops and saliency peaks can be attributed to an image."""
    if axis not in ("vertical", "horizontal"):
        raise ValueError(f"axis must be 'vertical' or 'horizontal'; got {axis!r}")
    a, kind = _to_float(first)
    b, _ = _to_float(second)
    colour = np.asarray(fill, dtype=np.float64)
    colour = colour / (255 if colour.max() > 1 else 1)
    if axis == "vertical":
        width, height = max(a.shape[1], b.shape[1]), a.shape[0] + gap + b.shape[0]
        origins = [((width - a.shape[1]) // 2, 0), ((width - b.shape[1]) // 2, a.shape[0] + gap)]
    else:
        width, height = a.shape[1] + gap + b.shape[1], max(a.shape[0], b.shape[0])
        origins = [(0, (height - a.shape[0]) // 2), (a.shape[1] + gap, (height - b.shape[0]) // 2)]
    canvas = np.broadcast_to(colour, (height, width, 3)).copy()
    boxes = []
    for img, (left, top) in zip((a, b), origins):
        canvas[top : top + img.shape[0], left : left + img.shape[1]] = img
        boxes.append((left, top, left + img.shape[1], top + img.shape[0]))
    measured = {"first_box": boxes[0], "second_box": boxes[1], "canvas_size": (width, height)}
    return _from_float(canvas, kind), EditRecord("canvas", {"axis": axis, "gap": gap}, measured)


def swap_positions(first, second, *, axis: str = "vertical", gap: int = 0, fill=(255, 255, 255)):
    """Both orders of a pair: ``((first-then-second, second-then-first), record)``. The record holds the
    box of ``first`` and ``second`` in each canvas, so position effects can be separated from content."""
    ab, rec_ab = paired_canvas(first, second, axis=axis, gap=gap, fill=fill)
    ba, rec_ba = paired_canvas(second, first, axis=axis, gap=gap, fill=fill)
    measured = {
        "first_box_in_original": rec_ab.measured["first_box"],
        "second_box_in_original": rec_ab.measured["second_box"],
        "first_box_in_swapped": rec_ba.measured["second_box"],
        "second_box_in_swapped": rec_ba.measured["first_box"],
    }
    return (ab, ba), EditRecord("swap_positions", {"axis": axis, "gap": gap}, measured)
