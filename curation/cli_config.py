"""Command-line options generated from a pydantic config model: one flag per field.

Every stage command is built from its stage's config model, so a field added to the model
is reachable from the command line with no CLI edit, with its help text taken from the
field (``Field(description=...)``, else the model docstring's ``Attributes:`` entry).
Flags only override what the user typed: defaults stay in the model, never restated here.

Mapping of field types to flags:

* ``bool``: ``--name/--no-name``;
* ``Literal[...]``: a value checked against the choices (listed in the help);
* ``int``, ``float``, ``str`` (optionally ``None``): a value;
* ``list[X]``: repeatable and comma-separated (``--methods exact,phash`` or ``--rule a --rule b``);
* anything else (unions such as ``bool | list[str]``, dicts): a YAML value (``--x '[a, b]'``).

Every generated command also takes ``--config FILE`` (a YAML mapping of the config's keys),
``--set key=value`` (repeatable, the value read as YAML; dots reach into mappings) and, where
it reads or writes a dataset, ``--storage-option key=value`` (fsspec options such as
``endpoint_url``). Precedence: model defaults < ``--config`` < flags < ``--set``.

Use it for a new stage command::

    from curation.cli_config import stage_command

    def _summary(out, stats):            # one line printed when the stage is done
        return f"{out.url}: version {out.version}, {stats['samples_out']} kept"

    classify = stage_command("classify", summary=_summary, doc="Add class labels.")

and register ``"classify": "curation.classify.commands:classify"`` in ``curation/cli.py``.
:func:`config_command` does the same for any model and handler (not only stages).
"""
from __future__ import annotations

import inspect
import os
import re
import types
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from curation.errors import ConfigError

Kind = Literal["bool", "value", "list", "yaml"]
BREAK_LEASE_HELP = ("take over the output's write lease when its holder's heartbeat is stale "
                    "(a writer that died); sets CURATION_BREAK_LEASE=1")
# the options every generated command adds itself (field flags must not take these names)
COMMON = ("config", "set", "storage_option", "endpoint_url", "break_lease")


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    field: str
    names: tuple[str, ...]
    kind: Kind
    type: Any                 # the Python type typer converts the value to
    help: str
    default: Any              # the model's default (shown in the help), or PydanticUndefined
    choices: tuple[Any, ...] = ()


# -- field -> flag -----------------------------------------------------------------------
def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True
    return tp, False


def _literal_values(tp: Any) -> tuple[Any, ...] | None:
    return tuple(get_args(tp)) if get_origin(tp) is Literal else None


def classify_field(tp: Any) -> tuple[Kind, Any, tuple[Any, ...]]:
    """(kind, Python type for the option value, choices) for a field annotation."""
    inner, _ = _strip_optional(tp)
    if inner is bool:
        return "bool", bool, ()
    lit = _literal_values(inner)
    if lit is not None:
        if all(isinstance(v, str) for v in lit):
            return "value", str, lit
        return "yaml", str, lit
    if inner in (int, float, str):
        return "value", inner, ()
    if get_origin(inner) in (list, tuple, set, frozenset, Sequence):
        (item,) = get_args(inner)[:1] or (str,)
        item_inner, _ = _strip_optional(item)
        if item_inner in (int, float, str) or _literal_values(item_inner) is not None:
            return "list", str, _literal_values(item_inner) or ()
    return "yaml", str, ()


_NAMES = r"[A-Za-z_]\w*(?:\s*[,/]\s*[A-Za-z_]\w*)*"
_ATTR = re.compile(r"^(\s*)(" + _NAMES + r")\s*(?:\([^)]*\))?:\s*(.*)$")


def docstring_attributes(cls: type) -> dict[str, str]:
    """Field descriptions from the Google-style ``Attributes:`` sections of ``cls`` and its bases.

    An entry may name several fields (``model, pretrained: the CoCa model``), and one line may
    hold two entries (``batch_size: images per pass. device: auto uses CUDA``).
    """
    fields = set(getattr(cls, "model_fields", {}))
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.getdoc(klass) or ""
        lines = doc.splitlines()
        try:
            start = next(i for i, ln in enumerate(lines) if ln.strip() in ("Attributes:", "Args:"))
        except StopIteration:
            continue
        entries: list[tuple[list[str], list[str]]] = []
        indent = None
        for ln in lines[start + 1:]:
            if not ln.strip():
                continue
            m = _ATTR.match(ln)
            cur_indent = len(ln) - len(ln.lstrip())
            if indent is None:
                indent = cur_indent
            if cur_indent < indent:
                break  # the section ended
            if m and cur_indent == indent:
                entries.append((re.split(r"\s*[,/]\s*", m.group(2).strip()), [m.group(3)]))
            elif entries:
                entries[-1][1].append(ln.strip())
        for names, text in entries:
            for part_names, part in _split_entries(names, " ".join(text), fields):
                for n in part_names:
                    out[n] = part
    return out


def _split_entries(names: list[str], text: str, fields: set[str]) -> list[tuple[list[str], str]]:
    """Split ``"images per pass. device: auto ..."`` into separate entries when the later names are fields."""
    pieces = re.split(r"(?<=\.)\s+(" + _NAMES + r"):\s+", text)
    out = [(names, pieces[0].strip())]
    for i in range(1, len(pieces) - 1, 2):
        more = re.split(r"\s*[,/]\s*", pieces[i].strip())
        if all(n in fields for n in more):
            out.append((more, pieces[i + 1].strip()))
        else:
            prev_names, prev = out[-1]
            out[-1] = (prev_names, f"{prev} {pieces[i]}: {pieces[i + 1]}".strip())
    return out


def _clean(text: str) -> str:
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text)
    return text.replace("[", r"\[")  # rich markup


def field_help(model: type[BaseModel], name: str, docs: dict[str, str] | None = None) -> str:
    """The help text of a field: its ``description``, else its docstring entry, else ''."""
    f = model.model_fields[name]
    if f.description:
        return f.description
    return (docs if docs is not None else docstring_attributes(model)).get(name, "")


def flags_for(model: type[BaseModel], *, names: dict[str, Sequence[str]] | None = None,
              exclude: Sequence[str] = ()) -> list[Flag]:
    """One :class:`Flag` per field of ``model`` (except ``exclude``).

    Args:
        names: field -> option names, to keep an established flag (``{"rules": ["--rule"]}``);
            the default is ``--field-name``.
        exclude: fields the command sets itself (a positional argument, say).
    """
    names = dict(names or {})
    docs = docstring_attributes(model)
    out = []
    for fname, f in model.model_fields.items():
        if fname in exclude:
            continue
        kind, tp, choices = classify_field(f.annotation)
        default = f.get_default(call_default_factory=True) if not f.is_required() else PydanticUndefined
        text = _clean(field_help(model, fname, docs))
        if choices and kind == "list":
            text = f"{text} (of: {', '.join(map(str, choices))}; comma-separated or repeated)"
        elif kind == "list":
            text = f"{text} (comma-separated or repeated)"
        elif kind == "yaml":
            text = f"{text} (a YAML value)"
        flag_names = tuple(names.get(fname) or (f"--{fname.replace('_', '-')}",))
        out.append(Flag(fname, flag_names, kind, tp, text.strip(), default, choices))
    return out


# -- values -> config --------------------------------------------------------------------
def parse_kv(items: Sequence[str], what: str) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}`` (values read as YAML scalars/lists)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{what} {item!r}: {p!r} is not a mapping")
        node[parts[-1]] = value
    return out


def storage_options_from(items: Sequence[str] | None, endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options from ``--storage-option key=value`` items and the ``--endpoint-url`` shortcut."""
    opts = parse_kv(list(items or ()), "--storage-option")
    if endpoint_url:
        opts["endpoint_url"] = endpoint_url
    return opts


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _flag_value(flag: Flag, value: Any) -> Any:
    if flag.kind == "list":
        items: list[str] = []
        for v in value or ():
            items.extend(s.strip() for s in str(v).split(",") if s.strip())
        return items
    if flag.kind == "yaml":
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{flag.names[0]}: not a YAML value ({str(e).splitlines()[0]})") from None
    return value


def build_config(model: type[BaseModel], *, config_file: str | None, flag_values: dict[str, Any],
                 overrides: Sequence[str] = (), where: str = "", extra: dict[str, Any] | None = None) -> Any:
    """The validated config: ``config_file`` < ``extra`` < ``flag_values`` < ``overrides``.

    Raises:
        ConfigError: an unreadable file, a malformed ``--set`` or an invalid value (one line
            naming the key and the value).
    """
    from curation.config import load_yaml_mapping

    data: dict[str, Any] = load_yaml_mapping(config_file, "config") if config_file else {}
    data = _merge(data, extra or {})
    data = _merge(data, flag_values)
    data = _merge(data, parse_kv(list(overrides), "--set"))
    parse = getattr(model, "parse", None)
    if parse is not None:
        return parse(data, where)
    from pydantic import ValidationError

    from curation.config import format_validation_error

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, data, where)) from None


# -- command construction ----------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """An extra (non-config) parameter of a generated command: a typer Argument/Option."""

    name: str
    type: Any
    default: Any              # typer.Argument(...) / typer.Option(...)


def _option_for(flag: Flag) -> tuple[Any, Any]:
    """(annotation, typer.Option) for a flag, defaulting to the model's default (for the help only:
    the command passes on just the flags the user typed, so the model stays the one source)."""
    default = flag.default if flag.default is not PydanticUndefined else None
    if flag.kind == "bool":
        decls = [f"{n}/--no-{n[2:]}" for n in flag.names[:1]] + list(flag.names[1:])
        return bool, typer.Option(bool(default), *decls, help=flag.help)
    if flag.kind == "list":
        return list[str] | None, typer.Option(list(default) if default else None, *flag.names, help=flag.help,
                                              show_default=bool(default))
    show = default is not None
    if flag.kind == "value" and flag.choices:  # checked by the model, so the error names the config key
        return str | None, typer.Option(default, *flag.names, help=flag.help, show_default=show,
                                        metavar="|".join(map(str, flag.choices)))
    if flag.kind == "yaml":
        import json

        return str | None, typer.Option(None if default is None else json.dumps(default), *flag.names,
                                        help=flag.help, show_default=show)
    return (flag.type | None if default is None else flag.type), typer.Option(default, *flag.names, help=flag.help,
                                                                             show_default=show)


def config_command(model: type[BaseModel], handler: Callable[..., None], *, name: str, doc: str,
                   params: Sequence[Param] = (), names: dict[str, Sequence[str]] | None = None,
                   exclude: Sequence[str] = (), storage: bool = True, where: str = "",
                   extra_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Callable[..., None]:
    """A typer command function whose options are ``model``'s fields plus ``params``.

    Args:
        model: the pydantic config model (a :class:`~curation.config.StageConfig` or any BaseModel).
        handler: ``handler(config, args, storage_options)``: ``config`` the validated model,
            ``args`` the values of ``params`` by name.
        name: the function's name (for typer). doc: the command's help.
        params: positional arguments and options that are not config fields.
        names: field -> established option names (keeps README flags valid).
        exclude: fields not offered as flags (set by ``params`` through ``extra_config``).
        storage: add ``--storage-option key=value`` (commands that touch a dataset URL).
        extra_config: ``extra_config(args) -> dict`` of config keys derived from ``params``
            (they rank between ``--config`` and the flags).
    """
    flags = flags_for(model, names=names, exclude=exclude)
    clash = {f.field for f in flags} & ({p.name for p in params} | set(COMMON))
    if clash:
        raise ValueError(f"{name}: parameters {sorted(clash)} clash with config fields")
    sig_params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}

    def add(pname: str, annotation: Any, default: Any) -> None:
        sig_params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
        annotations[pname] = annotation

    add("ctx", typer.Context, inspect.Parameter.empty)
    for p in params:
        add(p.name, p.type, p.default)
    for f in flags:
        add(f.field, *_option_for(f))
    add("config", str | None, typer.Option(None, "--config", metavar="FILE",
                                           help="YAML mapping of config keys (flags and --set override it)"))
    add("set", list[str] | None, typer.Option(None, "--set", metavar="KEY=VALUE",
                                              help="override a config key (value read as YAML; repeatable)"))
    if storage:
        add("storage_option", list[str] | None, typer.Option(
            None, "--storage-option", metavar="KEY=VALUE",
            help="fsspec storage option for dataset URLs, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable)"))
        add("endpoint_url", str | None, typer.Option(None, "--endpoint-url",
                                                     help="S3 endpoint (short for --storage-option endpoint_url=URL)"))
        add("break_lease", bool, typer.Option(False, "--break-lease", help=BREAK_LEASE_HELP))

    def command(**kw: Any) -> None:
        ctx = kw.pop("ctx")
        given = {}
        for f in flags:
            src = ctx.get_parameter_source(f.field)
            if src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
                given[f.field] = _flag_value(f, kw[f.field])
        args = {p.name: kw[p.name] for p in params}
        cfg = build_config(model, config_file=kw.get("config"), flag_values=given, overrides=kw.get("set") or (),
                           where=where or name, extra=extra_config(args) if extra_config else None)
        storage_options = storage_options_from(kw.get("storage_option"), kw.get("endpoint_url")) if storage else {}
        if kw.get("break_lease"):
            os.environ["CURATION_BREAK_LEASE"] = "1"  # read by the writers (curation.io.lease), in workers too
        handler(cfg, args, storage_options)

    command.__name__ = name
    command.__qualname__ = name
    command.__doc__ = doc
    # typer reads the generated parameters from __signature__ (functions have no such declared attribute)
    command.__signature__ = inspect.Signature(sig_params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    return command


def stage_progress(stage: str) -> Any:
    """A context manager yielding the ``progress(done, total, samples)`` callback of one stage,
    drawn by the same display ``curate run`` uses."""
    import contextlib

    from curation.runner.progress import StageProgress

    @contextlib.contextmanager
    def cm():
        with StageProgress() as bars:
            yield bars(stage)

    return cm()


def stage_command(stage: str, *, summary: Callable[[Any, dict[str, Any]], str], doc: str | None = None,
                  names: dict[str, Sequence[str]] | None = None, exclude: Sequence[str] = (),
                  params: Sequence[Param] = (), extra_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                  prepare: Callable[[dict[str, Any], dict[str, Any]], None] | None = None) -> Callable[..., None]:
    """A ``curate <stage>`` command for a registered stage, generated from its ``Config``.

    The command takes the dataset (or, for a ``takes_input`` stage, the input) as its first
    argument; a ``produces_dataset`` stage also takes ``--out``. It runs the stage on an
    embedded local Ray (or ``RAY_ADDRESS``) with the shared progress display, then prints
    ``summary(output_dataset, stats_dict)``.

    Args:
        stage: the registered stage name (entry point group ``curation.stages``).
        prepare: ``prepare(args, ctx_kwargs)`` may adjust the StageContext arguments (e.g. overwrite).
    """
    from curation.stage import stage_class

    cls = stage_class(stage)
    first = "input" if cls.takes_input else "dataset"
    first_help = ("input to read (URL list, shards, ...; local path or fsspec URL)" if cls.takes_input
                  else "dataset root (local path or fsspec URL)")
    base: list[Param] = [Param(first, str, typer.Argument(..., help=first_help))]
    if cls.produces_dataset:
        out_help = "output dataset root (local path or fsspec URL)"
        base.append(Param("out", str, typer.Option(..., "--out", help=out_help)))
    skip = set(exclude)
    if cls.takes_input and "input" in cls.Config.model_fields:
        skip.add("input")
    if cls.produces_dataset and "output" in cls.Config.model_fields:
        skip.add("output")

    def derived(args: dict[str, Any]) -> dict[str, Any]:
        out = dict(extra_config(args) if extra_config else {})
        if cls.takes_input and "input" in cls.Config.model_fields:
            out["input"] = args["input"]
        if cls.produces_dataset and "output" in cls.Config.model_fields:
            out["output"] = args["out"]
        return out

    def handler(cfg: Any, args: dict[str, Any], storage_options: dict[str, Any]) -> None:
        from curation.io import Dataset
        from curation.stage import StageContext

        instance = cls(cfg)
        ds = None if cls.takes_input else Dataset(args[first], storage_options or None)
        output = args["out"] if cls.produces_dataset else args[first]
        ctx_kw: dict[str, Any] = {"output": output, "storage_options": storage_options,
                                  "input": args[first] if cls.takes_input else None}
        if prepare:
            prepare(args, ctx_kw)
        with stage_progress(stage) as progress:
            ctx = StageContext(progress=progress, **ctx_kw)
            out = instance(ds, ctx)
        stats = ctx.stats.to_dict() if ctx.stats else {}
        typer.echo(summary(out, stats))

    return config_command(cls.Config, handler, name=stage.replace("-", "_"), doc=doc or (cls.__doc__ or "").strip(),
                          params=[*base, *params], names=names, exclude=sorted(skip), extra_config=derived,
                          where=stage)
