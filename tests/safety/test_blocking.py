"""Hash-list blocking at download and WebDataset ingest: listed images and their near copies
are never written anywhere (tars, metadata, temp folders); unlisted images pass."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.blocklist.lists import BlocklistError, load_lists, parse_list, write_list
from curation.blocklist.pdq import from_hex, hamming_to_list, pdq_bytes, pdq_image
from tests.download.server import LoopbackServer
from tests.safety.images import encode, files_containing, near_copies, photo, windows

LISTED_PDQ = "astronaut"      # listed by its PDQ hash (CSV list): its near copies must match
LISTED_EXACT = "coffee"       # listed by SHA-256 (plain list): the exact bytes only, plus its PDQ
LISTED_MD5 = "clock"          # listed by MD5 of the exact bytes
UNLISTED = ("chelsea", "rocket", "camera", "moon", "brick", "immunohistochemistry", "horse", "coins")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Files(LoopbackServer):
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        super().__init__(protocol_version="HTTP/1.0")

    def handle(self, req):
        body = self.files.get(req.path)
        self.reply(req, 200 if body is not None else 404, body or b"", "image/jpeg", close=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Served files (path -> bytes), which are expected blocked, and the two blocklists."""
    tmp = tmp_path_factory.mktemp("corpus")
    files, blocked = {}, {}
    for name in (LISTED_PDQ, LISTED_EXACT):
        im = photo(name)
        files[f"/{name}.jpg"] = encode(im)
        for kind, data in near_copies(im).items():
            files[f"/{name}-{kind}.jpg"] = data
    files[f"/{LISTED_MD5}.jpg"] = encode(photo(LISTED_MD5))
    for name in UNLISTED:
        files[f"/{name}.jpg"] = encode(photo(name))
    listed_pdq, _ = pdq_image(photo(LISTED_PDQ))
    coffee_pdq, _ = pdq_image(photo(LISTED_EXACT))
    write_list(str(tmp / "pdq_list.csv"), [(listed_pdq, "pdq")])
    exact = tmp / "exact.txt"
    exact.write_text("# exact digests\n" + hashlib.sha256(files[f"/{LISTED_EXACT}.jpg"]).hexdigest() + "\n"
                     f"md5:{hashlib.md5(files[f'/{LISTED_MD5}.jpg']).hexdigest()}\n\npdq:{coffee_pdq}\n")
    for path in files:
        stem = path[1:].split(".")[0]
        if stem.startswith((LISTED_PDQ, LISTED_EXACT, LISTED_MD5)):
            blocked[path] = "pdq_list" if stem.startswith(LISTED_PDQ) else "exact"
    return {"files": files, "blocked": blocked, "lists": [str(tmp / "pdq_list.csv"), str(exact)]}


def test_photos_are_far_apart_and_copies_near(corpus):
    """The premise: unlisted photos are far from the listed ones, near copies within 31 bits."""
    hashes = {p: str(pdq_bytes(b)[0]) for p, b in corpus["files"].items()}
    for path, h in hashes.items():
        stem = path[1:].split(".")[0]
        for listed in (LISTED_PDQ, LISTED_EXACT):
            d = int(hamming_to_list(from_hex(h), from_hex(hashes[f"/{listed}.jpg"])[None, :])[0])
            if stem.startswith(listed):
                assert d <= 31, (path, d)
            else:
                assert d > 64, (path, d)


def expected_outputs(files: dict[str, bytes], image_size: int) -> dict[str, bytes | None]:
    """The encoded image the worker would have written for each served file without lists."""
    from curation.download.config import DownloadConfig
    from curation.download.worker import make_resizer, process_image

    cfg = DownloadConfig(input="x", image_size=image_size, pdq=False, phash=False)
    resizer = make_resizer(cfg)
    return {p: process_image(b, cfg, resizer)[1] for p, b in files.items()}


_SCRIPT = """
import json, sys
from curation.download.stage import download
args = json.loads(sys.argv[1])
for job in args["jobs"]:
    ds = download(job["input"], job["out"], **args["opts"])
    print(json.dumps({"out": job["out"], "stats": ds.manifest["history"][0]["stats"]}))
"""


def _wds(path: str, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tf:
        for i, (p, data) in enumerate(files.items()):
            for ext, blob in (("jpg", data), ("txt", p.encode())):
                info = tarfile.TarInfo(f"s{i:04d}.{ext}")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    return path


def test_listed_images_and_near_copies_are_never_written(corpus, tmp_path):
    files, blocked = corpus["files"], corpus["blocked"]
    server = Files(files)
    try:
        urls = str(tmp_path / "urls.parquet")
        paths = list(files)
        pq.write_table(pa.table({"url": [server.base_url + p for p in paths], "text": paths}), urls)
        wds_in = tmp_path / "wds_in"
        wds_in.mkdir()
        _wds(str(wds_in / "00000.tar"), files)
        out, tmpdir = tmp_path / "out", tmp_path / "tmp"
        out.mkdir()
        tmpdir.mkdir()
        opts = {"image_size": 64, "thread_count": 4, "samples_per_shard": 8, "blocklists": corpus["lists"],
                "allow_private_networks": ["127.0.0.1/32"], "respect_robots_txt": False, "timeout": 5.0}
        jobs = [{"input": urls, "out": str(out / "urls")},
                {"input": str(wds_in / "00000.tar"), "out": str(out / "wds")}]
        # every temp file the download's processes make goes under tmpdir (Ray's own session
        # folder needs a short path for its sockets: it holds logs, never sample bytes)
        ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        env = {**os.environ, "TMPDIR": str(tmpdir), "RAY_TMPDIR": ray_tmp, "PYTHONPATH": ROOT}
        try:
            res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps({"jobs": jobs, "opts": opts})],
                                 env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        server.close()
    from curation.io import Dataset

    for job, key in zip(jobs, ("url", "caption")):
        ds = Dataset(job["out"])
        rows = ds.read_meta().to_pylist()
        assert len(rows) == len(files)
        by_path = {(r[key][len(server.base_url):] if key == "url" else r[key]): r for r in rows}
        for path, r in by_path.items():
            if path in blocked:
                assert r["status"] == "blocked_hash", (path, r["status"], r["error"])
                assert r["blocklist"] == blocked[path]
                assert r["tar_offset"] is None and r["sha256"] is None and r["pdq"] is None
                assert r["phash"] is None and r["width"] is None
            else:
                assert r["status"] == "success", (path, r["error"])
                assert len(r["pdq"]) == 64 and 0 <= r["pdq_quality"] <= 100
        stats = ds.manifest["history"][0]["stats"]["status"]
        assert stats["blocked_hash"] == len(blocked) and stats["success"] == len(files) - len(blocked)
    # no byte of a blocked image anywhere: served bytes nor what the resizer would have written
    written = expected_outputs({p: files[p] for p in blocked}, 64)
    needles = [w for p in blocked for w in windows(files[p]) + windows(written[p] or b"")]
    assert files_containing(str(out), needles) == []
    assert files_containing(str(tmpdir), needles) == []
    # the unlisted images are there (the check above can find bytes: it finds these)
    kept = expected_outputs({p: files[p] for p in files if p not in blocked}, 64)
    found = files_containing(str(out / "urls" / "shards"), [w for b in kept.values() for w in windows(b or b"")[:1]])
    assert found


def test_bad_list_is_one_line_error_before_anything_is_written(tmp_path):
    from curation.download.stage import download

    bad = tmp_path / "bad.txt"
    bad.write_text("0123\n")
    with pytest.raises(BlocklistError, match=r"bad.txt:1: 4 hex digits"):
        download(str(tmp_path / "urls.parquet"), str(tmp_path / "out"), blocklists=[str(bad)])
    with pytest.raises(BlocklistError, match="blocklist file not found"):
        download(str(tmp_path / "urls.parquet"), str(tmp_path / "out"), blocklists=[str(tmp_path / "nope.csv")])
    assert not (tmp_path / "out").exists()


def test_list_formats():
    sha, md5, pdq = "a" * 64, "b" * 32, "c" * 64
    hl = parse_list("x", "x.txt", f"# c\n{sha}\n{md5}\npdq:{pdq}\nSHA256:{'d' * 64}  # trailing\n")
    assert hl.sha256 == {sha, "d" * 64} and hl.md5 == {md5}
    assert sorted(r.tobytes().hex() for r in hl.pdq) == sorted([sha, pdq])  # untyped 64 hex: both
    hl = parse_list("y", "y.csv", f"id,Hash,kind\n1,{md5},md5\n2,{pdq},pdq\n3,{sha},sha256\n")
    assert hl.md5 == {md5} and hl.sha256 == {sha} and [r.tobytes().hex() for r in hl.pdq] == [pdq]
    with pytest.raises(BlocklistError, match=r"y.csv:2: unknown hash kind 'sha1'"):
        parse_list("y", "y.csv", f"hash,kind\n{sha},sha1\n")
    with pytest.raises(BlocklistError, match=r"z:1: not a hex digest"):
        parse_list("z", "z", "not-hex\n")


def test_pdq_hex_is_threatexchange_order():
    """The 64 hex digits are pdqhash.compute's bit vector in order, most significant bit first."""
    import numpy as np
    import pdqhash

    from curation.blocklist.pdq import pdq_array

    a = np.asarray(photo("astronaut"))
    bits, _ = pdqhash.compute(a)
    h, _ = pdq_array(a)
    assert int(h, 16) == int("".join(str(int(b)) for b in bits), 2)


def test_pdq_image_is_pdqhash_on_a_64px_frame():
    """At 64x64 PDQ's own filter is one pixel wide: the front end of pdq_image must then be the
    identity, so its hash and quality are pdqhash's exactly (greyscale: no luma rounding)."""
    import numpy as np
    import pdqhash

    from curation.blocklist.pdq import to_hex

    grey = np.asarray(photo("camera").convert("L").resize((64, 64), Image.Resampling.BOX))
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)))
    assert pdq_image(Image.fromarray(grey, "L")) == (to_hex(bits), int(quality))


def test_pdq_of_a_draft_frame_is_the_full_resolution_hash():
    """The download worker hashes a JPEG draft decode (1/2 to 1/8 size): pdq_image, told the
    original size, must land near pdqhash's hash of the full-size decode, which pdqhash on the
    draft frame does not (its filter width follows the frame's size)."""
    import numpy as np

    from curation.blocklist.pdq import pdq_array

    def dist(a: str, b: str) -> int:
        return int(hamming_to_list(from_hex(a), from_hex(b)[None, :])[0])

    ours, naive = [], []
    for name in ("astronaut", "camera", "chelsea", "coffee", "rocket", "brick", "horse", "coins"):
        im = photo(name)
        big = im.resize((im.width * 2, im.height * 2), Image.Resampling.LANCZOS)
        data = encode(big, quality=90)
        full, _ = pdq_array(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        draft = Image.open(io.BytesIO(data))
        draft.draft("RGB", (big.width // 4, big.height // 4))
        draft.load()
        assert draft.width < big.width / 3  # a 1/4 draft really was decoded
        ours.append(dist(pdq_image(draft, big.size)[0], full))
        naive.append(dist(pdq_array(np.asarray(draft.convert("RGB")))[0], full))
        from_bytes = pdq_bytes(data)[0]
        assert from_bytes is not None and dist(from_bytes, full) <= 8, name
    assert max(ours) <= 12 and sum(ours) / len(ours) <= 6, (ours, naive)  # of 31 (PDQ match distance)
    assert sum(naive) > 2 * sum(ours), (ours, naive)  # the premise: the frame's own hash drifts


def test_named_lists_and_duplicate_names(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("a" * 64 + "\n")
    assert [h.name for h in load_lists((f"ncmec={p}",))] == ["ncmec"]
    assert [h.name for h in load_lists((str(p),))] == ["l"]
    with pytest.raises(BlocklistError, match="two blocklists are named 'l'"):
        load_lists((str(p), f"l={p}"))
