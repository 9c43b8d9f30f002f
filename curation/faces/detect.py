"""Face detectors: OpenCV's bundled Haar cascade, or a user-supplied YuNet ONNX model.

Both return boxes as ``[x0, y0, x1, y1]`` normalised to the image (floats in [0, 1]), the form
DataComp's ``face_bboxes`` column uses, so they survive any later resize of the image. The Haar
cascade ships inside ``opencv-python-headless`` (``cv2.data.haarcascades``): no download. YuNet
(``face_detection_yunet_*.onnx`` from OpenCV's model zoo) is far more accurate on small,
rotated or partly hidden faces; pass its path as ``detector``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from curation.errors import ConfigError

HAAR = "haar"
_CASCADE = "haarcascade_frontalface_default.xml"


class Detector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[list[float]]: ...


def _normalise(boxes, w: int, h: int) -> list[list[float]]:
    out = []
    for x, y, bw, bh in boxes:
        x0, y0 = max(0.0, float(x) / w), max(0.0, float(y) / h)
        x1, y1 = min(1.0, float(x + bw) / w), min(1.0, float(y + bh) / h)
        if x1 > x0 and y1 > y0:
            out.append([round(x0, 5), round(y0, 5), round(x1, 5), round(y1, 5)])
    return sorted(out)


@dataclass
class HaarDetector:
    """OpenCV's frontal-face Haar cascade (Viola-Jones).

    Attributes:
        scale_factor, min_neighbors: ``detectMultiScale`` settings (more neighbours: fewer
            false positives, more misses).
        min_size: smallest face side as a fraction of the image's shorter side.
    """

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: float = 0.05

    def __post_init__(self):
        import cv2

        path = os.path.join(cv2.data.haarcascades, _CASCADE)  # type: ignore[attr-defined]
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ConfigError(f"{path}: OpenCV's bundled Haar cascade did not load")

    def detect(self, rgb: np.ndarray) -> list[list[float]]:
        import cv2

        h, w = rgb.shape[:2]
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(12, int(self.min_size * min(w, h)))
        found = self._cascade.detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(side, side))
        return _normalise(found if len(found) else [], w, h)


@dataclass
class YuNetDetector:
    """OpenCV's YuNet CNN detector from an ONNX file (``cv2.FaceDetectorYN``)."""

    path: str
    score_threshold: float = 0.7
    nms_threshold: float = 0.3

    def __post_init__(self):
        import cv2

        if not os.path.isfile(self.path):
            raise ConfigError(f"{self.path}: face detector model not found")
        try:
            self._net = cv2.FaceDetectorYN.create(self.path, "", (320, 320), self.score_threshold,
                                                  self.nms_threshold)
        except cv2.error as e:
            raise ConfigError(f"{self.path}: not a YuNet ONNX model OpenCV can load ({str(e).strip()[:120]})") from None

    def detect(self, rgb: np.ndarray) -> list[list[float]]:
        import cv2

        h, w = rgb.shape[:2]
        self._net.setInputSize((w, h))
        _, faces = self._net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return _normalise([] if faces is None else [f[:4] for f in faces], w, h)


def make_detector(detector: str = HAAR, **kw) -> Detector:
    """``haar`` (bundled) or a path to a YuNet ``.onnx`` file."""
    if detector == HAAR:
        return HaarDetector(**{k: v for k, v in kw.items() if k in ("scale_factor", "min_neighbors", "min_size")})
    if detector.endswith(".onnx"):
        return YuNetDetector(detector, **{k: v for k, v in kw.items() if k in ("score_threshold",)})
    raise ConfigError(f"detector: expected 'haar' or a YuNet .onnx file, got {detector!r}")
