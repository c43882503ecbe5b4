"""qvgen.core: the plumbing every qvgen package shares, and nothing else.

- `Frozen`: the one frozen pydantic base (immutable, `extra="forbid"`, attribute docstrings as descriptions).
- Atomic writes: `atomic_write`, `atomic_write_bytes`, `atomic_write_text` (files), `atomic_dir` (folders),
  `remove_stale_temps` (what a killed writer left), `file_sha256` (the digest manifests record), `files_sha256` (a folder's).
- Config loading: `load_config(cls, path, overrides)` with `--set KEY=VALUE` (YAML values), `ConfigError`,
  `add_override_argument` for CLIs, `schema_json` for their `schema` subcommands, `cli_main` (user errors → one line, exit 1; `--debug`).

Depends on pydantic and PyYAML only.
"""

from qvgen.core.atomic import (
    atomic_dir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    files_sha256,
    remove_stale_temps,
)
from qvgen.core.config import (
    ConfigError,
    add_override_argument,
    apply_overrides,
    apply_overrides_to_tree,
    cli_main,
    load_config,
    parse_override,
    read_config_tree,
    schema_json,
    set_dotted,
    validate_config,
)
from qvgen.core.frozen import Frozen
from qvgen.core.quiet import run_quiet_cli, silence_known_import_noise

__all__ = [
    "ConfigError",
    "Frozen",
    "add_override_argument",
    "apply_overrides",
    "apply_overrides_to_tree",
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "cli_main",
    "file_sha256",
    "files_sha256",
    "load_config",
    "parse_override",
    "read_config_tree",
    "remove_stale_temps",
    "run_quiet_cli",
    "schema_json",
    "set_dotted",
    "silence_known_import_noise",
    "validate_config",
]
