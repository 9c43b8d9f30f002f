"""Faces on a real photograph (scikit-image's astronaut): detected, then blurred by reshard."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation.errors import ConfigError
from curation.faces.detect import make_detector
from curation.io import Dataset, DatasetWriter
from tests.safety.images import encode, photo


def _dataset(root: str) -> Dataset:
    w = DatasetWriter(root, stage="test", config={})
    with w.shard(0) as sw:
        for name in ("astronaut", "coffee"):
            data = encode(photo(name), quality=95)
            sw.add({"uid": name, "url": None, "caption": name, "status": "success", "width": 0, "height": 0},
                   image=data)
        sw.add({"uid": "failed", "url": None, "caption": "gone", "status": "http_404"})
    return w.commit([0])


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_faces_detected_and_blurred_on_a_real_photograph(ray_local, tmp_path):
    from curation.faces.stage import detect_faces
    from curation.reshard.stage import ReshardStage
    from curation.stage import StageContext

    ds = detect_faces(_dataset(str(tmp_path / "ds")).url)
    rows = {r["uid"]: r for r in ds.read_meta().to_pylist()}
    faces = rows["astronaut"]["face_bboxes"]
    assert rows["astronaut"]["num_faces"] == len(faces) >= 1
    x0, y0, x1, y1 = faces[0]
    assert 0.25 < x0 < x1 < 0.65 and 0.05 < y0 < y1 < 0.45  # Eileen Collins' face, upper middle
    assert rows["coffee"]["num_faces"] == 0 and rows["coffee"]["face_bboxes"] == []
    assert rows["failed"]["num_faces"] is None and rows["failed"]["face_bboxes"] is None

    out = ReshardStage({"blur_faces": True, "output": str(tmp_path / "blurred")})(ds, StageContext())
    assert out.manifest["history"][0]["config"]["blur_faces"] is True
    assert out.manifest["extra"]["faces_blurred"] is True
    got = {r["uid"]: r for r in out.read_meta().to_pylist()}
    original = ds.read_image(rows["astronaut"])
    before, after = _pixels(original), _pixels(out.read_image(got["astronaut"]))
    # the unblurred re-encode (same encoder, same quality) sets the tolerance outside the boxes
    plain = _pixels(encode(Image.open(io.BytesIO(original)).convert("RGB"), quality=95))
    h, w = before.shape[:2]
    inside = np.zeros((h, w), dtype=bool)
    near = np.zeros((h, w), dtype=bool)
    for bx0, by0, bx1, by1 in faces:
        inside[int(by0 * h):int(by1 * h), int(bx0 * w):int(bx1 * w)] = True
        side = max(bx1 - bx0, by1 - by0)
        m = 0.25 * side  # margin + feather of curation.faces.blur, with room to spare
        near[max(0, int((by0 - m) * h)):int((by1 + m) * h), max(0, int((bx0 - m) * w)):int((bx1 + m) * w)] = True
    diff = np.abs(after - before).mean(axis=2)
    jpeg = np.abs(plain - before).mean(axis=2)
    assert diff[inside].mean() > 8 * max(jpeg[inside].mean(), 1.0)     # the face is blurred away
    assert diff[~near].mean() <= jpeg[~near].mean() + 0.5               # the rest: within JPEG tolerance
    assert np.percentile(diff[~near], 99.9) <= np.percentile(jpeg[~near], 99.9) + 4
    # an image without faces is copied byte for byte
    assert out.read_image(got["coffee"]) == ds.read_image(rows["coffee"])
    # the blurred face no longer detects
    assert make_detector().detect(after.astype(np.uint8)) == []


def test_blur_needs_face_columns_and_detector_errors(tmp_path):
    from curation.reshard.stage import ReshardStage
    from curation.stage import StageContext

    ds = _dataset(str(tmp_path / "ds"))
    with pytest.raises(ConfigError, match="no face_bboxes column; run `curate faces` first"):
        ReshardStage({"blur_faces": True, "output": str(tmp_path / "out")})(ds, StageContext())
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="face detector model not found"):
        make_detector(str(tmp_path / "yunet.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a YuNet ONNX model"):
        make_detector(str(bad))
    with pytest.raises(ConfigError, match="expected 'haar' or a YuNet .onnx file"):
        make_detector("retinaface")
