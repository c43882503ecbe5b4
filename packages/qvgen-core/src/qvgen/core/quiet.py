"""Drop the known, harmless third-party import messages in qvgen's command-line entry points (only there).

Importing torchao on this torch logs "Failed to load …/_C_mxfp8….so" and "…/_C_cutlass_90a….so" (wheel
extensions built for another Python/GPU), torch logs two `register_constant()` Enum deprecations from
`torch.utils._pytree` while torchao registers its enums, and diffusers logs "Unable to import `torchao`
Tensor objects". None affects qvgen. `silence_known_import_noise()` adds a `logging.Filter` for exactly
these messages to exactly those loggers; every other record, from those loggers too, passes. Library
imports of qvgen never call it: only the console scripts in ``qvgen.entrypoints`` do, before importing
anything heavy.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from typing import Final, NoReturn

KNOWN_IMPORT_NOISE: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("torchao", re.compile(r"^Failed to load \S*/torchao/_C_(mxfp8|cutlass_90a)\.[^/\s]*\.so: ")),
    (
        "torch.utils._pytree",
        re.compile(
            r"^<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile as an opaque "
            r"value type\. Calling register_constant\(\) on Enum subclasses is deprecated"
        ),
    ),
    (
        "diffusers.quantizers.torchao.torchao_quantizer",
        re.compile(r"^Unable to import `torchao` Tensor objects\. This may affect loading checkpoints"),
    ),
)
"""(logger name, message pattern) of each dropped message."""


class KnownNoiseFilter(logging.Filter):
    """Rejects records whose message matches ``pattern``; passes everything else."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.search(record.getMessage()) is None


def silence_known_import_noise() -> None:
    """Install the filters of `KNOWN_IMPORT_NOISE` (idempotent); call before torchao/diffusers are imported."""
    for name, pattern in KNOWN_IMPORT_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownNoiseFilter) and f.pattern is pattern for f in logger.filters):
            logger.addFilter(KnownNoiseFilter(pattern))


def run_quiet_cli(module: str) -> NoReturn:
    """A console script's body: install the filters, then import `module` and exit with its `main()`."""
    silence_known_import_noise()
    sys.exit(importlib.import_module(module).main())
