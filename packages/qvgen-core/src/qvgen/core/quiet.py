"""Drop the known, harmless third-party import messages in qvgen's command-line entry points (only there).

Importing torchao on this torch logs "Failed to load …/_C_mxfp8….so" and "…/_C_cutlass_90a….so" (wheel
extensions built for another Python/GPU), torch logs two `register_constant()` Enum deprecations from
`torch.utils._pytree` while torchao registers its enums, and diffusers logs "Unable to import `torchao`
Tensor objects". None affects qvgen. `silence_known_import_noise()` adds a `logging.Filter` for exactly
these messages to exactly those loggers; every other record, from those loggers too, passes. The console
scripts in ``qvgen.entrypoints`` call it before importing anything heavy; a library import of qvgen only
wraps its own first import of torchao (qvgen.quant) and of diffusers' quantizers (qvgen.models) in
`known_import_noise_dropped()`, which removes its filters again on exit, so `import qvgen.quant` prints
nothing and no later message is touched.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def known_import_noise_dropped() -> Iterator[None]:
    """Drop the messages of `KNOWN_IMPORT_NOISE` only inside the block (around a third-party import)."""
    added: list[tuple[logging.Logger, KnownNoiseFilter]] = []
    for name, pattern in KNOWN_IMPORT_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownNoiseFilter) and f.pattern is pattern for f in logger.filters):
            added.append((logger, KnownNoiseFilter(pattern)))
            logger.addFilter(added[-1][1])
    try:
        yield
    finally:
        for logger, noise_filter in added:
            logger.removeFilter(noise_filter)


def run_quiet_cli(module: str) -> NoReturn:
    """A console script's body: install the filters, then import `module` and exit with its `main()`."""
    silence_known_import_noise()
    sys.exit(importlib.import_module(module).main())
