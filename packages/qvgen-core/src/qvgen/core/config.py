"""Config loading: a YAML (or JSON) file, `--set KEY=VALUE` overrides parsed as YAML, one validation.

Every CLI reads its config through `load_config` and registers `--set` with `add_override_argument`, so the
override grammar is the same everywhere: a dotted key into the config tree, a YAML value
(`--set train.max_steps=4`, `--set quant.weight.kind=minmax`, `--set data.shards=[a,b]`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from qvgen.core.interrupt import Interrupted, interrupt_exit_code, raise_on_sigterm
from qvgen.core.outputs import expand_path

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or `--set` override that cannot be read or does not validate; CLIs print it, exit 2."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping (YAML says keys are unique;
    PyYAML would keep the last silently)."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, list | dict | set):  # `? [a, b]`: unhashable, and no config field is named so
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"a mapping key must be a plain value, not a {type(key).__name__}",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key]}, again on line {line})",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
# YAML 1.2 floats: PyYAML (YAML 1.1) reads `5e-3` or `1e4` (no dot) as a *string*, which strict validation
# then refuses; tried after PyYAML's own int/float resolvers, so `12` stays an int.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_error_summary(e: yaml.YAMLError) -> str:
    """A PyYAML error as one line: the problem and where ("line 3, column 7"), without the quoted snippet."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x) or type(e).__name__
        return f"{what}{where}"
    return " ".join(str(e).split())


MAX_TREE_VALUES = 100_000
"""A config tree holding more values than this (counting each use of a YAML alias) is refused: an alias bomb."""
MAX_TREE_DEPTH = 64


def yaml_load_strict(text: str) -> Any:
    """`yaml.safe_load`, but a duplicate key in a mapping is a `yaml.YAMLError` naming both lines.

    Every other way a document cannot become a config tree is a `yaml.YAMLError` too: an integer past
    Python's digit limit, nesting deeper than `MAX_TREE_DEPTH`, aliases expanding past `MAX_TREE_VALUES`.
    """
    try:
        tree = yaml.load(text, Loader=_StrictLoader)
    except RecursionError as e:
        raise yaml.YAMLError(f"nested too deeply (a config is at most {MAX_TREE_DEPTH} levels)") from e
    except (ValueError, TypeError, OverflowError) as e:  # e.g. int("9" * 5000) in PyYAML's int constructor
        raise yaml.YAMLError(f"a value cannot be read: {e}") from e
    _check_tree_size(tree)
    return tree


def _check_tree_size(tree: Any) -> None:
    count = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_TREE_VALUES:
            raise yaml.YAMLError(
                f"more than {MAX_TREE_VALUES} values once aliases are expanded (an alias bomb?)"
            )
        if depth > MAX_TREE_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_TREE_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b.c=VALUE` → ("a.b.c", VALUE parsed as YAML; an empty VALUE is the empty string)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"--set expects KEY=VALUE with a dotted key such as train.max_steps=4; got {item!r}"
        )
    try:
        value = yaml_load_strict(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {yaml_error_summary(e)}") from e
    return key, value


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `dotted="a.b.c"`, creating missing (or null) sections."""
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: `{'.'.join(keys[: i + 1])}` is a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides_to_tree(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the raw config `tree` with every `--set` item applied in order."""
    out = json.loads(json.dumps(tree, default=str))
    for item in overrides:
        set_dotted(out, *parse_override(item))
    return out


def read_config_tree(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of a YAML/JSON file (an empty file is `{}`); errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); a config file is YAML or JSON") from e
    try:
        data = yaml_load_strict(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {yaml_error_summary(e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file is a YAML mapping of fields; got a {type(data).__name__}")
    return data


def validate_config(cls: type[M], tree: Mapping[str, Any], source: str) -> M:
    """Validate `tree` as `cls` strictly, then expand `~` and `$VAR` in every path field.

    Strict as JSON is: no bool↔number and no string→number coercion (`caption_dropout: yes` is refused, not
    1.0), while strings still name enums and paths. Errors are `ConfigError`s naming `source`.
    """
    try:
        payload = json.dumps(tree, default=str, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: not a tree of plain values: {e}") from e
    try:
        cfg = cls.model_validate_json(payload, strict=True)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid {cls.__name__}: {validation_summary(e)}") from e
    try:
        return expand_model_paths(cfg)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from e


def validation_summary(e: ValidationError) -> str:
    """A pydantic error as one line: each invalid field's dotted path, its problem and the value given."""
    parts = []
    for err in e.errors(include_url=False):
        # a key with a line break in it stays quoted, so the summary stays one line
        where = ".".join(str(x) if str(x).isprintable() else repr(str(x)) for x in err["loc"])
        where = where or "(top level)"
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) or "input" not in err else f" (got {_short_repr(value)})"
        parts.append(f"{where}: {' '.join(str(err['msg']).split())}{shown}")
    return "; ".join(parts)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def expand_model_paths(model: M, where: str = "") -> M:
    """A copy of `model` with `~` and `$VAR` expanded in every `Path` value, nested models and sequences
    included (an unset variable is a `ValueError` naming the field)."""
    update: dict[str, Any] = {}
    for name, value in model:
        dotted = f"{where}{name}"
        new = _expand_value(value, dotted)
        if new is not value:
            update[name] = new
    return model.model_copy(update=update) if update else model


def _expand_value(value: Any, dotted: str) -> Any:
    if isinstance(value, Path):
        path = expand_path(value, dotted)
        return value if path == value else path
    if isinstance(value, BaseModel):
        return expand_model_paths(value, dotted + ".")
    if isinstance(value, list | tuple):
        items = [_expand_value(v, f"{dotted}[{i}]") for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if isinstance(value, dict):
        mapped = {k: _expand_value(v, f"{dotted}.{k}") for k, v in value.items()}
        return value if all(mapped[k] is value[k] for k in value) else mapped
    return value


def load_config(cls: type[M], path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> M:
    """Read `path`, apply the `--set` `overrides`, validate as `cls`; every error names the file."""
    tree = apply_overrides_to_tree(read_config_tree(path), overrides)
    source = str(path) + "".join(f" --set {_shown(item)}" for item in overrides)
    return validate_config(cls, tree, source)


def _shown(item: str) -> str:
    """A `--set` item as the error shows it: as typed, or quoted when it holds a line break or control character
    (so the error stays one line)."""
    return item if item.isprintable() else repr(item)


def apply_overrides(cfg: M, overrides: Sequence[str], source: str = "--set") -> M:
    """A validated config with `--set` items applied and validated again (`cfg` itself if there are none)."""
    if not overrides:
        return cfg
    tree = apply_overrides_to_tree(cfg.model_dump(mode="json"), overrides)
    return validate_config(type(cfg), tree, source + "".join(f" --set {_shown(item)}" for item in overrides))


def add_override_argument(parser: argparse.ArgumentParser, example: str = "train.max_steps=4") -> None:
    """Register the repeatable `--set KEY=VALUE` option (stored in `args.overrides`); `example` is a key of the
    command's own config, shown in the help."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config field, e.g. --set {example} (the value is parsed as YAML; repeatable)",
    )


def schema_json(cls: type[BaseModel]) -> str:
    """The JSON schema of `cls`, as the `schema` subcommands print it (configs/schema/*.json)."""
    return json.dumps(cls.model_json_schema(), indent=2)


def cli_main(prog: str, dispatch: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI's `dispatch(args)`; a user error (ValueError/OSError) becomes one line on stderr and exit 1.

    Ctrl-C (SIGINT) and SIGTERM print one line (an `Interrupted`'s own message, e.g. where to resume) and
    return 130 / 143. `--debug` anywhere on the line is removed from the arguments and lets every error and
    interrupt propagate with its traceback. `dispatch` itself returns 2 for a `ConfigError` it caught, 0 on
    success.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with raise_on_sigterm():
            return dispatch([a for a in args if a != "--debug"])
    except KeyboardInterrupt as e:
        if debug:
            raise
        message = str(e) if isinstance(e, Interrupted) and str(e) else "interrupted"
        print(f"{prog}: {message}", file=sys.stderr)
        return interrupt_exit_code(e)
    except (ValueError, OSError) as e:
        if debug:
            raise
        print(f"{prog}: error: {e} (run again with --debug for the traceback)", file=sys.stderr)
        return 1
