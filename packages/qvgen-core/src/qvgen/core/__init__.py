"""qvgen.core: the plumbing every qvgen package shares, and nothing else.

- `Frozen`: the one frozen pydantic base (immutable, `extra="forbid"`, attribute docstrings as descriptions).
- Atomic writes: `atomic_write`, `atomic_write_bytes`, `atomic_write_text` (files), `atomic_dir` (folders),
  `remove_stale_temps` (what a killed writer left), `file_sha256` (the digest manifests record), `files_sha256` (a folder's).
- Config loading: `load_config(cls, path, overrides)` with `--set KEY=VALUE` (YAML values), `ConfigError`,
  `add_override_argument` for CLIs, `schema_json` for their `schema` subcommands, `cli_main` (user errors → one line, exit 1; `--debug`).

- Provenance: `Provenance` (what produced an artefact), `write_provenance`/`read_provenance`/`check_provenance`
  (a rerun with other inputs is `ProvenanceMismatch`, listing each change), `canonical_digest`,
  `file_fingerprint`/`tree_fingerprint`.
- Output folders: `claim_output_dir` (never into a folder another tool or the user filled, never over an
  input), `replace_output_dir` (`--overwrite`: temp sibling + rename), `expand_path`, `check_disjoint`.
- Logs: `append_jsonl` (whole lines, fsynced), `read_jsonl`/`repair_jsonl` (a torn last line dropped).
- Interrupts: `Interrupted`/`Terminated`, `raise_on_sigterm`; `cli_main` prints one line, exits 130/143.
- Write errors: `write_errors_named(path)` turns torch's/safetensors' full-disk errors into one OSError.
- Sealed manifests: `sealed_manifest_json`/`seal_manifest` (a `digest` + per-field digests written with a
  manifest), `check_manifest_seal` (an edited manifest is refused naming the file and field), `seal_manifest_file`.

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
    write_errors_named,
)
from qvgen.core.config import (
    ConfigError,
    add_override_argument,
    apply_overrides,
    apply_overrides_to_tree,
    cli_main,
    expand_model_paths,
    load_config,
    parse_override,
    read_config_tree,
    schema_json,
    set_dotted,
    validate_config,
    validation_summary,
    yaml_load_strict,
)
from qvgen.core.frozen import Frozen
from qvgen.core.interrupt import (
    Interrupted,
    Terminated,
    interrupt_exit_code,
    interrupt_signal,
    raise_on_sigterm,
)
from qvgen.core.jsonl import append_jsonl, read_jsonl, repair_jsonl
from qvgen.core.outputs import (
    MARKER_NAME,
    OutputMarker,
    check_disjoint,
    claim_output_dir,
    expand_path,
    is_tool_output,
    mark_output_dir,
    read_marker,
    replace_output_dir,
)
from qvgen.core.provenance import (
    Provenance,
    ProvenanceMismatch,
    canonical_digest,
    canonical_json,
    check_provenance,
    file_fingerprint,
    read_provenance,
    tree_fingerprint,
    write_provenance,
)
from qvgen.core.quiet import known_import_noise_dropped, run_quiet_cli, silence_known_import_noise
from qvgen.core.seal import (
    SEAL_FIELDS,
    check_manifest_seal,
    field_digests,
    is_sealed,
    seal_manifest,
    seal_manifest_file,
    sealed_manifest_json,
)

__all__ = [
    "MARKER_NAME",
    "SEAL_FIELDS",
    "ConfigError",
    "Frozen",
    "Interrupted",
    "OutputMarker",
    "Provenance",
    "ProvenanceMismatch",
    "Terminated",
    "add_override_argument",
    "append_jsonl",
    "apply_overrides",
    "apply_overrides_to_tree",
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_digest",
    "canonical_json",
    "check_disjoint",
    "check_manifest_seal",
    "check_provenance",
    "claim_output_dir",
    "cli_main",
    "expand_model_paths",
    "expand_path",
    "field_digests",
    "file_fingerprint",
    "file_sha256",
    "files_sha256",
    "interrupt_exit_code",
    "interrupt_signal",
    "is_sealed",
    "is_tool_output",
    "known_import_noise_dropped",
    "load_config",
    "mark_output_dir",
    "parse_override",
    "raise_on_sigterm",
    "read_config_tree",
    "read_jsonl",
    "read_marker",
    "read_provenance",
    "remove_stale_temps",
    "repair_jsonl",
    "replace_output_dir",
    "run_quiet_cli",
    "schema_json",
    "seal_manifest",
    "seal_manifest_file",
    "sealed_manifest_json",
    "set_dotted",
    "silence_known_import_noise",
    "tree_fingerprint",
    "validate_config",
    "validation_summary",
    "write_errors_named",
    "write_provenance",
    "yaml_load_strict",
]
