"""The ``faces`` stage: ``face_bboxes`` (normalised ``[x0, y0, x1, y1]`` boxes) and ``num_faces``.

Detects on the stored image of every sample that has one (rows without an image get nulls),
with OpenCV's bundled Haar cascade or a user's YuNet ONNX model. The boxes are normalised to
the image, so ``reshard --blur-faces`` can blur them in any later copy; nothing else changes.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from curation.config import StageConfig, execution
from curation.faces.detect import HAAR, make_detector
from curation.io import Dataset
from curation.stage import Shard, ShardResult, ShardStage, StageContext


class FacesConfig(StageConfig):
    """Options of ``faces``.

    Attributes:
        detector: ``haar`` (OpenCV's bundled frontal-face cascade) or a YuNet ``.onnx`` path.
        min_size: Haar: smallest face side, as a fraction of the image's shorter side.
        min_neighbors: Haar: detections a face needs (higher: fewer false positives).
        score_threshold: YuNet: minimum face confidence.
        executor: ``ray`` (shard tasks), ``local`` (in this process) or ``auto`` (the stage decides).
    """

    detector: str = HAAR
    min_size: float = Field(default=0.05, gt=0, lt=1)
    min_neighbors: int = Field(default=5, ge=1)
    score_threshold: float = Field(default=0.7, gt=0, lt=1)
    executor: str = execution("auto")


class FacesStage(ShardStage):
    """Detect faces in every stored image; see the module docstring."""

    name = "faces"
    Config = FacesConfig

    def plan(self, ds: Dataset, ctx: StageContext) -> None:
        self._detector()  # a missing or unloadable model file fails here, before anything is written
        return None

    def _detector(self):
        c: FacesConfig = self.config  # type: ignore[assignment]
        return make_detector(c.detector, min_size=c.min_size, min_neighbors=c.min_neighbors,
                             score_threshold=c.score_threshold)

    def process_shard(self, state: Any, shard: Shard, plan: Any) -> ShardResult:
        import numpy as np

        from curation.io.images import ImageError, decode_rgb

        det = self._detector()
        rows = shard.meta.select(["uid", "shard", "tar_offset", "tar_size"]).to_pylist()
        with_image = [r for r in rows if r["tar_offset"] is not None]
        images = iter(shard.dataset.read_images(with_image))
        boxes, counts, errors = [], [], 0
        for r in rows:
            if r["tar_offset"] is None:
                boxes.append(None)
                counts.append(None)
                continue
            try:
                with decode_rgb(next(images)) as im:
                    found = det.detect(np.asarray(im))
            except ImageError:
                errors += 1
                boxes.append(None)
                counts.append(None)
                continue
            boxes.append(found)
            counts.append(len(found))
        n_faces = sum(c or 0 for c in counts)
        return ShardResult(columns={"face_bboxes": boxes, "num_faces": counts},
                           stats={"faces": n_faces,
                                  "images_with_faces": sum(1 for c in counts if c),
                                  "dropped": {"undecodable": errors} if errors else {}})


def detect_faces(dataset: str, *, storage_options: dict | None = None, **options: Any) -> Dataset:
    """Library entry point: ``detect_faces("/data/ds")`` -> the new version with face columns."""
    ds = Dataset(dataset, storage_options)
    return FacesStage(options)(ds, StageContext(output=dataset, storage_options=storage_options or {}))
