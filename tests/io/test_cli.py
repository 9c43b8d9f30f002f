"""query / inspect / validate / reshard through the real CLI, including error paths."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from curation.cli import app
from tests.helpers import make_dataset

runner = CliRunner()


def run(*args):
    from curation.errors import CurationError

    try:
        r = runner.invoke(app, list(args), catch_exceptions=False)
        return r.exit_code, r.output
    except CurationError as e:  # what main() turns into exit 2
        return 2, str(e)


def test_query_table_and_files(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root)
    code, out = run("query", root, "SELECT status, count(*) AS n FROM samples GROUP BY status ORDER BY status")
    assert code == 0 and "http_404" in out and "success" in out
    code, _ = run("query", root, "SELECT uid FROM samples", "--format", "json", "--out", str(tmp_path / "q.json"))
    assert code == 0 and len(json.load(open(tmp_path / "q.json"))) == 12
    code, _ = run("query", root, "SELECT * FROM samples", "--format", "parquet", "--out", str(tmp_path / "q.parquet"))
    assert code == 0 and pq.read_table(tmp_path / "q.parquet").num_rows == 12


def test_query_unknown_column(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root)
    code, out = run("query", root, "SELECT clip_scor FROM samples")
    assert code == 2 and "unknown column 'clip_scor'" in out


def test_inspect_and_validate(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root)
    code, out = run("inspect", root, "--json")
    info = json.loads(out)
    assert code == 0 and info["num_samples"] == 12 and info["status_counts"] == {"success": 10, "http_404": 2}
    code, out = run("validate", root)
    assert code == 0 and "valid: 12 samples, 10 images" in out


def test_missing_and_malformed_manifest(tmp_path):
    code, out = run("inspect", str(tmp_path / "nothing"))
    assert code == 2 and "no manifest" in out
    root = tmp_path / "ds"
    make_dataset(str(root))
    (root / "manifest.json").write_text("{not json")
    code, out = run("validate", str(root))
    assert code == 2 and "manifest.json: malformed JSON" in out
    (root / "manifest.json").write_text(json.dumps({"format": "curation-dataset"}))
    code, out = run("validate", str(root))
    assert code == 2 and "malformed manifest" in out


def test_validate_detects_truncated_tar(tmp_path):
    root = tmp_path / "ds"
    make_dataset(str(root))
    tar = root / "shards" / "000001.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    code, out = run("validate", str(root))
    assert code == 2 and "000001.tar" in out


def test_validate_detects_wrong_offsets(tmp_path):
    root = tmp_path / "ds"
    make_dataset(str(root))
    meta_path = root / "meta" / "v1" / "000000.parquet"
    t = pq.read_table(meta_path)
    offs = t.column("tar_offset").to_pylist()
    offs[0] = offs[0] + 1
    import pyarrow as pa

    col = t.column_names.index("tar_offset")
    pq.write_table(t.set_column(col, "tar_offset", pa.array(offs, pa.int64())), meta_path)
    code, out = run("validate", str(root))
    assert code == 2 and "do not address" in out


def test_parquet_missing_required_column(tmp_path):
    root = tmp_path / "ds"
    make_dataset(str(root))
    meta_path = root / "meta" / "v1" / "000000.parquet"
    pq.write_table(pq.read_table(meta_path).drop(["sha256"]), meta_path)
    code, out = run("validate", str(root))
    assert code == 2 and "000000.parquet" in out and "sha256" in out


def test_reshard_keeps_selected(tmp_path, ray_local):
    root = str(tmp_path / "ds")
    make_dataset(root, shards=3, per_shard=5)
    out = str(tmp_path / "out")
    code, text = run("reshard", root, "--out", out, "--samples-per-shard", "4", "--where", "uid NOT LIKE 's1-%'")
    assert code == 0, text
    code, text = run("validate", out)
    assert code == 0 and "valid: 10 samples, 10 images in 3 shards" in text
    code, text = run("query", out, "SELECT count(*) AS n FROM samples WHERE uid LIKE 's1-%'", "--format", "json",
                     "--out", str(tmp_path / "n.json"))
    assert json.load(open(tmp_path / "n.json"))[0]["n"] == 0
