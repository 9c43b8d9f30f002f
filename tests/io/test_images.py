"""curation.io.images: the one safe image-open helper (format allow-list, pixel cap, memory budget)."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image

from curation.io import images
from curation.io.images import ImageError, decode, decode_rgb, decoded_bytes, open_image
from curation.synth.imaging import decompression_bomb

PACKAGE = Path(images.__file__).resolve().parents[1]

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n")


def encoded(fmt: str, size=(40, 30), mode="RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 30, 40, 128)[:len(mode)] if mode != "L" else 90).save(buf, fmt, **kw)
    return buf.getvalue()


def test_no_other_image_open_in_the_package():
    """Only curation/io/images.py may call Image.open (or decode with OpenCV)."""
    pattern = re.compile(r"\bImage\.open\s*\(|\bcv2\.(imdecode|imread)\s*\(")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(images.__file__).resolve():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not offenders, "decode through curation.io.images.open_image instead:\n" + "\n".join(offenders)
    assert any(pattern.search(line) for line in Path(images.__file__).read_text().splitlines())


@pytest.mark.parametrize("fmt,kw", [("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("GIF", {}), ("BMP", {})])
def test_allowed_formats_decode(fmt, kw):
    img = decode(encoded(fmt, **kw))
    assert img.size == (40, 30)
    assert img.format == fmt
    assert decode_rgb(encoded(fmt, **kw)).mode == "RGB"


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    rgb = decode_rgb(buf.getvalue())
    px = rgb.getpixel((5, 5))
    assert isinstance(px, tuple) and px[0] > 200 and px[2] < 50


def test_eps_named_jpg_never_reaches_ghostscript(tmp_path, monkeypatch):
    # without the allow-list Pillow would take it as EPS and run Ghostscript on load()
    assert Image.open(io.BytesIO(EPS)).format == "EPS"
    called = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a))
    path = tmp_path / "photo.jpg"
    path.write_bytes(EPS)
    for source in (EPS, path, str(path)):
        with pytest.raises(ImageError, match=r"PostScript/EPS data, not an allowed image format \(JPEG, PNG"):
            open_image(source)
    with pytest.raises(ImageError) as e:
        decode_rgb(b"\xc5\xd0\xd3\xc6" + EPS)
    assert e.value.reason == "not_image" and "EPS" in str(e.value)
    assert not called


def test_forbidden_formats_cannot_be_enabled():
    for fmt in ("EPS", "ps", "PDF"):
        with pytest.raises(ValueError, match="can never be decoded"):
            open_image(encoded("PNG"), formats=("PNG", fmt))


def test_other_formats_are_refused_and_named():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF")
    with pytest.raises(ImageError, match=r"^TIFF data, not an allowed") as e:
        open_image(buf.getvalue())
    assert e.value.reason == "not_image"
    with pytest.raises(ImageError, match="not an image in an allowed format"):
        open_image(b"<p>hello</p>" * 3)
    with pytest.raises(ImageError, match="empty") as e:
        open_image(b"")
    assert e.value.reason == "empty"


def test_decompression_bomb_refused_from_the_header():
    with pytest.raises(ImageError) as e:  # 400 Mpx: over 2x Pillow's limit
        open_image(decompression_bomb())
    assert e.value.reason == "too_many_pixels"
    small_bomb = decompression_bomb(9000, 9000)  # 81 Mpx: under Pillow's limit, over our 64 Mpx cap
    with pytest.raises(ImageError, match=r"9000x9000 = 81000000 pixels, over the cap of 64000000"):
        decode(small_bomb)


def test_bomb_warning_is_an_error_in_every_thread():
    bomb = decompression_bomb(10000, 10000)  # 100 Mpx: Pillow only warns (limit 89 Mpx)
    with pytest.raises(ImageError) as e:
        open_image(bomb, max_pixels=10 ** 9)
    assert e.value.reason == "too_many_pixels"
    errors: list[BaseException] = []

    def worker():
        try:
            open_image(bomb, max_pixels=10 ** 9)
        except ImageError as err:
            errors.append(err)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1 and errors[0].reason == "too_many_pixels"  # type: ignore[attr-defined]


def test_memory_budget_counts_channels_and_sample_size():
    rgba = encoded("PNG", size=(100, 100), mode="RGBA")
    with open_image(rgba) as im:
        assert decoded_bytes(im) == 100 * 100 * 4
    with pytest.raises(ImageError, match=r"100x100 RGBA PNG decodes to 40000 bytes, over the budget of 39999") as e:
        open_image(rgba, max_decoded_bytes=39_999)
    assert e.value.reason == "over_memory_budget"
    buf = io.BytesIO()
    Image.new("I;16", (100, 100), 40000).save(buf, "PNG")  # 16-bit greyscale: 2 bytes per pixel
    with open_image(buf.getvalue()) as im:
        assert decoded_bytes(im) == 100 * 100 * 2
    assert decode_rgb(buf.getvalue()).getpixel((0, 0)) == (156, 156, 156)  # 40000 >> 8


def test_jpeg_draft_decodes_smaller_but_never_below_need():
    data = encoded("JPEG", size=(1600, 1200))
    assert decode(data).size == (1600, 1200)
    assert decode(data, need=(400, 300)).size == (400, 300)
    assert decode(data, need=(401, 300)).size == (800, 600)
    assert decode(encoded("PNG", size=(1600, 1200)), need=(100, 100)).size == (1600, 1200)  # PNG: no draft


def test_alpha_flattened_on_white_in_uint8():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    rgb = decode_rgb(buf.getvalue())
    assert rgb.getpixel((0, 0)) == (255, 0, 0) and rgb.getpixel((1, 1)) == (255, 255, 255)


def test_truncated_data_is_undecodable():
    data = encoded("PNG", size=(300, 300))
    with pytest.raises(ImageError) as e:
        decode(data[: len(data) // 2])
    assert e.value.reason == "undecodable"


def test_opencv_pixel_cap_is_set_for_any_later_cv2_import(tmp_path):
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, at import: importing the helper first caps it."""
    path = tmp_path / "bomb.png"
    path.write_bytes(decompression_bomb(9000, 9000))  # 81 Mpx, over the 64 Mpx cap
    code = ("import sys, numpy as np\nimport curation.io.images\nimport cv2\n"
            "buf = np.frombuffer(open(sys.argv[1], 'rb').read(), np.uint8)\n"
            "try:\n    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)\nexcept cv2.error:\n    out = None\n"
            "print('refused' if out is None else f'decoded {out.shape}')\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "refused"
