"""The generated CLI: every config field of every stage is a flag with help, flags override only
what the user typed, ``--config``/``--set``/``--storage-option`` work, and a command module that
fails to import is an error."""
from __future__ import annotations

import json
from typing import Literal, Optional

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from curation.cli_config import Param, config_command, docstring_attributes, field_help, flags_for, parse_kv
from curation.config import StageConfig
from curation.errors import ConfigError
from tests.helpers import make_dataset

runner = CliRunner()

# fields a command sets from its own arguments or established aliases instead of a flag of the same name
SET_BY_COMMAND = {("download", "input"), ("download", "allow_private_networks"), ("reshard", "output"),
                  ("classify", "heads")}  # classify: --head NAME=PATH (repeatable)


def _options(app_cmd) -> dict[str, object]:
    out = {}
    for p in app_cmd.params:
        for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
            out[opt] = p
    return out


def test_every_stage_field_is_a_flag_with_help():
    from curation.cli import app
    from curation.stage import stage_class, stage_names

    group = typer.main.get_command(app)
    missing, no_help = [], []
    for name in stage_names():
        cmd = group.commands.get(name)  # type: ignore[attr-defined]  # get_command(app) of a multi-command app is a group
        assert cmd is not None, f"no `curate {name}` command"
        opts = _options(cmd)
        dests = {p.name for p in cmd.params}
        config = stage_class(name).Config
        for fname in config.model_fields:
            if not field_help(config, fname).strip():
                no_help.append(f"{name}.{fname}")
            if (name, fname) not in SET_BY_COMMAND and fname not in dests:
                missing.append(f"{name}.{fname}")
        for common in ("--config", "--set", "--storage-option", "--break-lease"):
            assert common in opts, (name, common)
    assert not missing, f"config fields without a flag: {missing}"
    assert not no_help, f"flags without help text (add description= or an Attributes: entry): {no_help}"


def test_established_flag_names_still_work():
    from curation.cli import app

    group = typer.main.get_command(app)
    expect = {"dedup": ["--methods", "--phash-radius"], "filter": ["--rule", "--clip-threshold", "--top-fraction"],
              "download": ["--url-col", "--caption-col", "--image-size", "--allow-private-networks",
                           "--allow-network", "--ignore-robots-txt", "--overwrite", "--keep-columns", "--out"],
              "caption": ["--method", "--views", "--bank"], "score": ["--model", "--pretrained", "--batch-size"],
              "reshard": ["--out", "--samples-per-shard", "--where", "--endpoint-url"]}
    for name, flags in expect.items():
        opts = _options(group.commands[name])  # type: ignore[attr-defined]  # a group, as above
        for f in flags:
            assert f in opts, (name, f)


class _Demo(StageConfig):
    """A config to drive the generator.

    Attributes:
        methods: detectors to run.
        size, mode: size and mode. flag: a switch.
    """

    methods: Optional[list[Literal["a", "b", "c"]]] = None
    size: int = Field(default=4, ge=1)
    mode: Literal["x", "y"] = "x"
    flag: bool = True
    nets: bool | list[str] = False
    name: str = Field(default="n", description="a described name")


def _app(seen: dict) -> typer.Typer:
    def handler(cfg, args, storage):
        seen.update(cfg=cfg, args=args, storage=storage)

    app = typer.Typer()
    app.command("demo")(config_command(_Demo, handler, name="demo", doc="demo",
                                       params=[Param("target", str, typer.Argument(...))]))
    app.command("other")(lambda: None)
    return app


def test_help_comes_from_description_then_docstring():
    docs = docstring_attributes(_Demo)
    assert docs["size"] == "size and mode." and docs["mode"] == "size and mode." and docs["flag"] == "a switch."
    helps = {f.field: f.help for f in flags_for(_Demo)}
    assert helps["name"] == "a described name"
    assert "detectors to run." in helps["methods"] and "a, b, c" in helps["methods"]


def test_precedence_defaults_config_flags_set(tmp_path):
    seen: dict = {}
    app = _app(seen)
    r = runner.invoke(app, ["demo", "T"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == _Demo() and seen["args"] == {"target": "T"} and seen["storage"] == {}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("size: 7\nmode: y\nflag: false\n")
    r = runner.invoke(app, ["demo", "T", "--config", str(cfg_file), "--size", "9", "--methods", "a,b",
                            "--methods", "c", "--set", "mode=x", "--nets", "[10.0.0.0/8]",
                            "--storage-option", "endpoint_url=http://127.0.0.1:9", "--storage-option", "anon=true"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.size, cfg.mode, cfg.flag, cfg.methods, cfg.nets) == (9, "x", False, ["a", "b", "c"], ["10.0.0.0/8"])
    assert seen["storage"] == {"endpoint_url": "http://127.0.0.1:9", "anon": True}
    r = runner.invoke(app, ["demo", "T", "--no-flag"])
    assert r.exit_code == 0 and seen["cfg"].flag is False


def test_bad_values_name_the_key(tmp_path):
    app = _app({})
    for argv, needle in ((["--mode", "z"], "demo.mode"), (["--methods", "a,zz"], "demo.methods"),
                         (["--set", "colour=red"], "demo.colour: unknown key"), (["--size", "0"], "demo.size"),
                         (["--set", "novalue"], "expected key=value")):
        with pytest.raises(ConfigError, match=needle):
            runner.invoke(app, ["demo", "T", *argv], catch_exceptions=False)
    with pytest.raises(ConfigError, match="config file not found"):
        runner.invoke(app, ["demo", "T", "--config", str(tmp_path / "none.yaml")], catch_exceptions=False)


def test_parse_kv_nests_and_reads_yaml():
    assert parse_kv(["a=1", "b.c=x", "d=[1, 2]", "e="], "--set") == {"a": 1, "b": {"c": "x"}, "d": [1, 2], "e": ""}


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    import curation.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "broken", "curation.no_such_module_xyz:cmd")
    with pytest.raises(cli.CommandImportError, match="curation.no_such_module_xyz"):
        cli._register()


@pytest.mark.slow
def test_filter_command_with_config_set_and_progress(tmp_path):
    from curation.cli import app
    from curation.io import Dataset

    root = str(tmp_path / "ds")
    make_dataset(root)
    cfg = tmp_path / "filter.yaml"
    cfg.write_text(json.dumps({"where": "uid LIKE 's0-%'", "english": False}))
    r = runner.invoke(app, ["filter", root, "--config", str(cfg), "--set", "parallel=false", "--no-drop-duplicates"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "keep 5 of 12" in r.output
    assert "[filter] 2/2 shards" in r.output  # the shared progress display (plain lines off a terminal)
    ds = Dataset(root)
    assert "keep" in ds.columns and ds.read_meta().column("keep").to_pylist().count(True) == 5


def test_help_does_not_import_torch():
    """`curate --help` (and a stage's --help) builds every command without importing torch:
    a first command answers in a second, and a machine without torch can still read the help."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import typer\n"
            "from curation.cli import app\n"
            "group = typer.main.get_command(app)\n"
            "ctx = group.make_context('curate', [], resilient_parsing=True)\n"
            "assert 'caption' in group.list_commands(ctx)\n"
            "group.get_help(ctx)\n"
            "for name in group.list_commands(ctx):\n"
            "    sub = group.get_command(ctx, name)\n"
            "    sub.get_help(sub.make_context(name, [], parent=ctx, resilient_parsing=True))\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print('TORCH', loaded[:5])\n"
            "sys.exit(1 if loaded else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
