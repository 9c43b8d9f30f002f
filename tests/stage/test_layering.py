"""Layers run one way: io <- cluster <- stage contract <- stages <- runner <- CLI (static AST scan).

Every ``import`` statement counts, including deferred ones inside functions: a deferred import
hides a cycle from the interpreter, not from this test.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "curation"
STAGES = ("download", "score", "dedup", "caption", "filters", "reshard", "classify", "faces")
ABOVE_IO = ("runner", "stage", "cluster", "cli", "demo", "demo_eval", "synth", *STAGES)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), str(path))
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".")[: -node.level]  # a/b/__init__ and a/b/c both resolve "." to a.b
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _files(*sub: str) -> list[Path]:
    root = PKG.joinpath(*sub)
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f in files:
        for name in sorted(_imports(f)):
            if any(name == p or name.startswith(p + ".") for p in forbidden):
                bad.append(f"{f.relative_to(PKG.parent)} imports {name}")
    return bad


def test_io_imports_nothing_above_it():
    assert _violations(_files("io"), tuple(f"curation.{p}" for p in ABOVE_IO)) == []


def test_the_reader_does_not_know_the_writers():
    # io.writer builds on io.dataset, never the other way round (no deferred-import cycle)
    assert _violations(_files("io", "dataset"), ("curation.io.writer",)) == []
    # the runner writes no dataset files itself: stages do, through the writers
    assert _violations(_files("runner"), ("curation.io.writer",)) == []


def test_cluster_and_stage_contract_sit_below_the_stages_and_runner():
    above = tuple(f"curation.{p}" for p in ("runner", "cli", *STAGES))
    assert _violations(_files("cluster"), above + ("curation.stage",)) == []
    assert _violations(_files("stage"), above) == []


def test_stages_import_no_runner_and_the_runner_no_stage():
    runner = tuple(f"curation.{p}" for p in ("runner", "cli"))
    assert _violations([f for s in STAGES for f in _files(s) if PKG.joinpath(s).is_dir()], runner) == []
    assert _violations(_files("runner"), tuple(f"curation.{s}" for s in STAGES)) == []


def test_the_runner_knows_no_stage_names():
    for f in _files("runner"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ("download", "score", "dedup", "caption", "filter", "reshard"), \
                    f"{f.name} names stage {node.value!r}: use the stage's class facts"


def test_only_the_demo_world_imports_synth():
    files = [f for f in PKG.rglob("*.py")
             if "synth" not in f.relative_to(PKG).parts[:1] and not f.name.startswith("demo")]
    assert _violations(files, ("curation.synth",)) == []


def test_the_scan_sees_deferred_imports():
    # the scanner itself must not be blind: module-level and function-local imports both count
    f = PKG / "io" / "dataset.py"
    assert "curation.io.format" in _imports(f) and "pyarrow.parquet" in _imports(f)
    src = PKG / "stage" / "base.py"
    assert "curation.io.writer.VersionWriter" in _imports(src)
    assert any("curation.synth" in n for n in _imports(PKG / "demo.py"))


# Stages do not touch Ray: per-shard work goes through ShardStage, the rest through Stage.map.
# Each exception names why; delete an entry when its module stops needing it.
RAY_ALLOWED = {
    "curation/download/fetch.py": "curation.cluster.limiter: the cluster-wide politeness service, not dispatch",
    "curation/score/pipeline.py": "pending: score's Ray Data GPU pipeline (H3 ports score to stage v2)",
    "curation/dedup/reference.py": "pending: dedup's distributed port (H2)",
}


def test_stages_do_not_touch_ray():
    files = [f for s in STAGES if PKG.joinpath(s).is_dir() for f in _files(s)
             if str(f.relative_to(PKG.parent)) not in RAY_ALLOWED]
    assert _violations(files, ("ray", "curation.cluster")) == []
