"""`silence_known_import_noise`: exactly the known third-party import messages are dropped, nothing else."""

import logging

import pytest

from qvgen.core.quiet import (
    KNOWN_IMPORT_NOISE,
    KnownNoiseFilter,
    known_import_noise_dropped,
    silence_known_import_noise,
)

SO = "/venv/lib/python3.11/site-packages/torchao"
NOISE = [  # verbatim from torchao 0.18 / torch 2.13 / diffusers 0.42 on this machine
    (
        "torchao",
        f"Failed to load {SO}/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library: x",
    ),
    ("torchao", f"Failed to load {SO}/_C_cutlass_90a.abi3.so: Could not load this library: x"),
    (
        "torch.utils._pytree",
        "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an "
        "opaque value type. Calling register_constant() on Enum subclasses is deprecated and will be an error "
        "in a future release.",
    ),
    (
        "diffusers.quantizers.torchao.torchao_quantizer",
        "Unable to import `torchao` Tensor objects. This may affect loading checkpoints serialized with `torchao`",
    ),
]
KEPT = [  # same loggers, other messages; and the same messages on other loggers
    ("torchao", f"Failed to load {SO}/_C_other.abi3.so: Could not load this library: x"),
    ("torchao", "Skipping import of cpp extensions due to incompatible torch version."),
    ("torch.utils._pytree", "<class 'Foo'> cannot be registered as a pytree"),
    ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import something else"),
    ("qvgen", NOISE[0][1]),
    ("diffusers", NOISE[3][1]),
]


@pytest.fixture
def clean_filters() -> object:
    names = {name for name, _ in KNOWN_IMPORT_NOISE}
    yield
    for name in names:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, KnownNoiseFilter)]:
            logger.removeFilter(f)


def passes(logger_name: str, message: str) -> bool:
    logger = logging.getLogger(logger_name)
    record = logger.makeRecord(logger_name, logging.WARNING, __file__, 1, message, None, None)
    return bool(logger.filter(record))


def test_known_noise_is_dropped_and_everything_else_passes(clean_filters: object) -> None:
    assert all(passes(name, msg) for name, msg in NOISE)  # nothing filtered before the call
    silence_known_import_noise()
    assert [passes(name, msg) for name, msg in NOISE] == [False] * len(NOISE)
    assert [passes(name, msg) for name, msg in KEPT] == [True] * len(KEPT)


def test_install_is_idempotent(clean_filters: object) -> None:
    silence_known_import_noise()
    silence_known_import_noise()
    for name, _ in KNOWN_IMPORT_NOISE:
        assert sum(isinstance(f, KnownNoiseFilter) for f in logging.getLogger(name).filters) == 1


def test_scoped_filters_drop_the_noise_only_inside_the_block(clean_filters: object) -> None:
    with known_import_noise_dropped():
        assert [passes(name, msg) for name, msg in NOISE] == [False] * len(NOISE)
        assert [passes(name, msg) for name, msg in KEPT] == [True] * len(KEPT)
    assert all(passes(name, msg) for name, msg in NOISE)  # nothing left behind
    for name, _ in KNOWN_IMPORT_NOISE:
        assert not any(isinstance(f, KnownNoiseFilter) for f in logging.getLogger(name).filters)


def test_scoped_filters_keep_the_console_scripts_filters(clean_filters: object) -> None:
    silence_known_import_noise()
    with known_import_noise_dropped():
        pass
    assert [passes(name, msg) for name, msg in NOISE] == [False] * len(NOISE)
