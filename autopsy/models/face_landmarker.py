"""MediaPipe Face Landmarker v2 with 52 blendshapes, in torch.

The pinned ``face_landmarker_v2_with_blendshapes.task`` (:data:`FACE_LANDMARKER_V2`) is a zip of
three TFLite models; :mod:`autopsy.models.tflite` converts each to a torch module whose outputs
match LiteRT to float tolerance (``tests/test_face_landmarker.py``):

- ``face_detector.tflite``: BlazeFace short range, byte-identical to the pinned
  ``face_detection_short_range.tflite``, run by :class:`autopsy.models.mediapipe.FaceDetector`;
- ``face_landmarks_detector.tflite``: 478 3-D landmarks (the 468 of Face Mesh plus 10 iris points)
  and a face-presence logit from a 192x192 RGB crop in [0, 1];
- ``face_blendshapes.tflite``: 52 expression scores in [0, 1] (ARKit-style names, index 0
  ``_neutral``) from the (x, y) of 146 of those landmarks, an MLP-Mixer that first centres the
  points and divides by their mean distance from the centroid (so only their shape matters).

The pipeline follows MediaPipe's task graphs (google-ai-edge/mediapipe, ``mediapipe/tasks/cc/vision/``):
``face_detector/face_detector_graph.cc`` makes the region of interest from the best detection (the
box, rotated so the eyes, keypoints 0 and 1, are level, scaled 1.5x);
``face_landmarker/face_landmarks_detector_graph.cc`` samples it into the 192x192 input (stretched,
not letterboxed; replicated border), decodes landmarks as ``output / 192`` and projects them back
into the image; ``face_landmarker/face_blendshapes_graph.cc`` (commit 3b85afc6e1523af81d3b7bdf51e855972490a2f1)
takes the landmark subset :data:`LANDMARKS_SUBSET` (``kLandmarksSubsetIdxs``) as image-pixel (x, y)
and names the outputs :data:`BLENDSHAPE_NAMES` (``kBlendshapeNames``); both tables are copied here
verbatim from that file.

:meth:`FaceLandmarker.analyse` runs the whole pipeline on PIL images, batched. ``roi="detect"``
is MediaPipe's own route; ``roi="image"`` uses the whole image as the region (for photos that are
already face crops; see ``incidents/face_hiring/perception.py`` for when that is the better choice),
and ``roi="detect_or_image"`` falls back to it when no face is detected. :meth:`FaceLandmarker.forward`
is the differentiable core: a prepared ``[N, 3, 192, 192]`` crop to landmarks and blendshapes.

Building with ``weights=None`` reads no file: the architectures come from the specs recorded in
``autopsy/models/specs/`` (checked against the pinned file by the tests), parameters are random.

References: Kartynnik et al. 2019, "Real-time Facial Surface Geometry from Monocular Video on Mobile
GPUs", arXiv:1907.06724; Grishchenko et al. 2020, "Attention Mesh: High-fidelity Face Mesh
Prediction in Real-time", arXiv:2006.10962; Google, "MediaPipe Face Mesh V2" and "Blendshape V2"
model cards (2023).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from autopsy.assets import Asset, AssetIntegrityError
from autopsy.contract import Weights, weights_of
from autopsy.models.mediapipe import FaceDetector
from autopsy.models.tflite import TFLiteModule, load_spec, load_tflite

SPECS = Path(__file__).parent / "specs"

CITATION = (
    "Kartynnik, Y., Ablavatski, A., Grishchenko, I. & Grundmann, M. Real-time Facial Surface Geometry "
    "from Monocular Video on Mobile GPUs. arXiv:1907.06724 (2019); Grishchenko, I. et al. Attention Mesh: "
    "High-fidelity Face Mesh Prediction in Real-time. arXiv:2006.10962 (2020); Google, MediaPipe Face "
    "Landmarker (Face Mesh V2 and Blendshape V2 model cards, 2023)."
)

FACE_LANDMARKER_V2 = Weights(
    name="face_landmarker_v2_with_blendshapes",
    files=(Asset(
        name="mediapipe/face_landmarker_v2_with_blendshapes",
        url=("https://storage.googleapis.com/mediapipe-assets/tasks/testdata/vision/"
             "face_landmarker_v2_with_blendshapes.task"),
        sha256="b261925d4aad812b47a0e8d58c1baa1223270a5d1f663d78338bc881c003879d", size=2357924,
        licence="Apache-2.0", citation=CITATION,
        source_page="https://github.com/google-ai-edge/mediapipe/blob/master/third_party/external_files.bzl",
        mirror_path="models/face_landmarker_v2_with_blendshapes.task",
    ),),
    transforms={
        "landmarks_input": {"size": (192, 192), "range": (0.0, 1.0), "roi_scale": 1.5, "letterbox": False,
                            "border": "replicate"},
        "blendshapes_input": {"points": 146, "coordinates": "image pixels (x, y)"},
    },
    meta={
        "task": "478 face landmarks and 52 facial expression blendshape scores",
        "landmarks": 478,
        "blendshapes": 52,
        "source_commit": "google-ai-edge/mediapipe@0179f0c4566ae78e02e1198cb73c60e4668395b5:"
                         "mediapipe/tasks/testdata/vision/face_landmarker_v2_with_blendshapes.task",
    },
)

#: SHA-256 of each model inside the .task zip; checked after the zip's own pin.
MEMBERS = {
    "face_detector.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_landmarks_detector.tflite": "bc5ee5de06d8c3a5465c3155227615b164480a52105a2b3df5748250ab4d914f",
    "face_blendshapes.tflite": "4f36dded049db18d76048567439b2a7f58f1daabc00d78bfe8f3ad396a2d2082",
}

#: The 146 of the 478 landmarks the blendshape model reads, in its order (``kLandmarksSubsetIdxs``
#: in face_blendshapes_graph.cc).
LANDMARKS_SUBSET = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39,
    40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133,
    136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160,
    161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246,
    249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295,
    296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
    336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382,
    384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)

#: The 52 outputs, in the model's order (``kBlendshapeNames``); ``_neutral`` is to be ignored.
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)

INPUT_SIZE = 192
ROI_SCALE = 1.5
ROI_MODES = ("detect", "image", "detect_or_image")


def read_member(weights: Weights, member: str) -> bytes:
    """The bytes of ``member`` of the pinned .task zip: the zip is verified against its SHA-256
    first (:meth:`Weights.fetch`), then the member against :data:`MEMBERS`."""
    if member not in MEMBERS:
        raise KeyError(f"{member!r} is not a model of the Face Landmarker task; choose one of {sorted(MEMBERS)}")
    path = weights.fetch()
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise AssetIntegrityError(f"{path} (verified) has no {member}; the pin and MEMBERS disagree") from None
        if info.file_size > 64 * 2**20:
            raise AssetIntegrityError(f"{path}: {member} claims {info.file_size} bytes; refusing to extract it")
        data = archive.read(info)
    digest = hashlib.sha256(data).hexdigest()
    if digest != MEMBERS[member]:
        raise AssetIntegrityError(f"{path}: {member} has SHA-256 {digest}, expected {MEMBERS[member]}")
    return data


def build_model(member: str, *, weights=FACE_LANDMARKER_V2, engine: str = "torch") -> TFLiteModule:
    """The converted model ``member`` of the task; ``weights=None`` builds its recorded architecture
    with random parameters and reads no file. ``engine``: what runs its no-gradient passes
    (:meth:`autopsy.models.tflite.TFLiteModule.use_engine`)."""
    stem = member.removesuffix(".tflite")
    pin = weights_of(weights)
    if pin is None:
        return TFLiteModule(load_spec(SPECS / f"{stem}.json"), name=stem)
    return load_tflite(read_member(pin, member), name=stem, engine=engine)


@dataclass(frozen=True)
class Region:
    """A rotated rectangle in image pixels: centre, size and rotation (radians, as MediaPipe's
    NormalizedRect: the sampled crop is turned by this angle, so a tilted face comes out level)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    @classmethod
    def whole(cls, width: int, height: int) -> "Region":
        return cls(width / 2, height / 2, float(width), float(height))

    def matrix(self) -> np.ndarray:
        """2x3 affine map from crop-normalised ``(s, t, 1)`` in [0, 1] to image pixels."""
        c, d = math.cos(self.rotation), math.sin(self.rotation)
        a, b = self.width, self.height
        return np.array([[a * c, -b * d, self.cx - 0.5 * a * c + 0.5 * b * d],
                         [a * d, b * c, self.cy - 0.5 * a * d - 0.5 * b * c]])


def region_from_detection(detection) -> Region:
    """MediaPipe's DetectionsToRects (rotation from keypoint 0 to 1, target angle 0) then
    RectTransformation (scale 1.5) on a :class:`~autopsy.models.mediapipe.Detection` in pixels."""
    x0, y0, x1, y1 = detection.box
    (ex0, ey0), (ex1, ey1) = detection.keypoints[0], detection.keypoints[1]
    rotation = math.atan2(ey1 - ey0, ex1 - ex0)  # = NormalizeRadians(0 - atan2(-(dy), dx))
    rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
    return Region((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * ROI_SCALE, (y1 - y0) * ROI_SCALE, rotation)


def crop_to_tensor(image, region: Region, size: int = INPUT_SIZE) -> torch.Tensor:
    """Sample ``region`` of an RGB image into a ``[1, 3, size, size]`` tensor in [0, 1]
    (ImageToTensorCalculator: bilinear, stretched to the square, replicated border)."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    height, width = array.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / np.float32(255))[None]
    # The sampling grid is small arithmetic: numpy does it without torch's per-op thread overhead.
    centres = (np.arange(size) + 0.5) / size
    s, t = np.meshgrid(centres, centres)  # s along x (columns), t along y (rows)
    m = region.matrix()
    x = m[0, 0] * s + m[0, 1] * t + m[0, 2]
    y = m[1, 0] * s + m[1, 1] * t + m[1, 2]
    # grid_sample's align_corners=False: -1 and 1 are the outer edges of the border pixels.
    grid = np.stack([x / width * 2 - 1, y / height * 2 - 1], axis=-1)[None].astype(np.float32)
    return F.grid_sample(img, torch.from_numpy(grid), mode="bilinear", padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class LandmarkerResult:
    """Per image: ``landmarks [N, 478, 3]`` in image pixels (z at the x scale), face ``presence``
    probability ``[N]``, ``blendshapes [N, 52]`` (:data:`BLENDSHAPE_NAMES`), whether a BlazeFace
    detection set the region (``detected [N]``; False for given regions and whole images) and the
    region itself (``regions``, None where there was none)."""

    landmarks: np.ndarray
    presence: np.ndarray
    blendshapes: np.ndarray
    detected: np.ndarray
    regions: tuple[Region, ...]

    def blendshape_table(self):
        """The blendshapes as a DataFrame, one column per name (``_neutral`` dropped)."""
        import pandas as pd

        return pd.DataFrame(self.blendshapes[:, 1:], columns=list(BLENDSHAPE_NAMES[1:]))


class FaceLandmarker(nn.Module):
    """MediaPipe Face Landmarker v2 (478 landmarks + 52 blendshapes), in torch.

    ``forward(x)`` maps prepared crops ``[N, 3, 192, 192]`` in [0, 1] to ``(landmarks [N, 478, 3]``
    in crop pixels, ``presence_logit [N]``, ``blendshapes [N, 52])``; it is differentiable end to
    end. The blendshapes there read the crop's own frame, which equals MediaPipe's image frame up to
    the translation and scale the blendshape model normalises away when the crop is upright and
    square in the image (as with ``roi="image"`` on a square photo). :meth:`analyse` is the
    MediaPipe pipeline on PIL images.

    ``engine="auto"`` (the default) runs passes that need no gradient in LiteRT on the task's own
    files, 5-10x faster than the torch graph and equal to it within the parity tolerance
    (``tests/test_engines_parity.py``); ``engine="torch"`` runs every pass in the port.
    """

    def __init__(self, *, weights=FACE_LANDMARKER_V2, engine: str = "auto"):
        super().__init__()
        pin = weights_of(weights)
        self.weights = pin
        self.detector = FaceDetector("short_range", weights=None)
        if pin is not None:  # the task's own detector (the same bytes as the pinned short-range file)
            self.detector.model = build_model("face_detector.tflite", weights=pin, engine=engine)
        self.landmarks_model = build_model("face_landmarks_detector.tflite", weights=pin, engine=engine)
        self.blendshapes_model = build_model("face_blendshapes.tflite", weights=pin, engine=engine)
        self.register_buffer("subset", torch.tensor(LANDMARKS_SUBSET), persistent=False)
        self.eval()

    def landmarks(self, x: torch.Tensor):
        """``(landmarks [N, 478, 3]`` in crop pixels, ``presence_logit [N])`` for prepared crops."""
        # Channels-last memory halves the time of the depthwise convolutions on a CPU; the values
        # agree with LiteRT to the same tolerance (tests/test_face_landmarker.py runs this path).
        points, flag = self.landmarks_model(x.contiguous(memory_format=torch.channels_last))
        return points.reshape(x.shape[0], 478, 3), flag.reshape(x.shape[0])

    def blendshapes(self, points_xy: torch.Tensor) -> torch.Tensor:
        """``[N, 52]`` scores from all 478 landmarks' (x, y) ``[N, 478, 2]`` (any pixel frame)."""
        return self.blendshapes_model(points_xy.index_select(1, self.subset))

    def forward(self, x: torch.Tensor):
        points, flag = self.landmarks(x)
        return points, flag, self.blendshapes(points[..., :2])

    def regions(self, images, *, roi: str = "detect") -> list[Region | None]:
        """The region each image's landmarks are read from (None: ``roi="detect"`` found no face)."""
        return self._regions(list(images), roi)[0]

    def _regions(self, images, roi):
        if roi not in ROI_MODES:
            raise ValueError(f"roi must be one of {ROI_MODES}, got {roi!r}")
        if roi == "image":
            return [Region.whole(*image.size) for image in images], [False] * len(images)
        regions, detected = [], []
        for image, detections in zip(images, self.detector.detect_many(images)):
            detected.append(bool(detections))
            if detections:
                regions.append(region_from_detection(detections[0]))
            else:
                regions.append(None if roi == "detect" else Region.whole(*image.size))
        return regions, detected

    @torch.inference_mode()
    def analyse(self, images, *, roi: str = "detect", regions=None, batch_size: int = 32) -> LandmarkerResult:
        """Landmarks and blendshapes for PIL images, the way MediaPipe's FaceLandmarker computes them
        (one face per image: the best detection). ``regions`` (one :class:`Region` or None per
        image) replaces ``roi``. Images without a region get NaN rows."""
        images = list(images)
        if regions is None:
            regions, detected = self._regions(images, roi)
        else:
            regions = list(regions)
            if len(regions) != len(images):
                raise ValueError(f"{len(regions)} regions for {len(images)} images")
            detected = [False] * len(images)
        n = len(images)
        landmarks = np.full((n, 478, 3), np.nan, np.float32)
        presence = np.full(n, np.nan, np.float32)
        blend = np.full((n, len(BLENDSHAPE_NAMES)), np.nan, np.float32)
        todo = [i for i, r in enumerate(regions) if r is not None]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            x = torch.cat([crop_to_tensor(images[i], regions[i]) for i in chunk])
            points, flag = self.landmarks(x)
            image_points = torch.stack([_to_image(points[k], regions[i]) for k, i in enumerate(chunk)])
            blend[chunk] = self.blendshapes(image_points[..., :2]).numpy()
            landmarks[chunk] = image_points.numpy()
            presence[chunk] = torch.sigmoid(flag).numpy()
        return LandmarkerResult(landmarks, presence, blend, np.array(detected, dtype=bool), tuple(regions))


def _to_image(points: torch.Tensor, region: Region) -> torch.Tensor:
    """Crop-pixel landmarks ``[478, 3]`` -> image pixels (LandmarkProjectionCalculator; z scaled
    by the region's width)."""
    m = torch.from_numpy(region.matrix()).to(points.dtype)
    st = points[:, :2] / INPUT_SIZE
    xy = st @ m[:, :2].T + m[:, 2]
    z = points[:, 2:] / INPUT_SIZE * region.width
    return torch.cat([xy, z], dim=1)
