"""The `qvgen-train` console script: known third-party import noise dropped, then `qvgen.train.cli.main`.

A module outside `qvgen.train` so the filter is in place before that package imports torchao/diffusers.
Under accelerate: ``accelerate launch -m qvgen.entrypoints.qvgen_train run CONFIG.yaml``.
"""

from __future__ import annotations

from qvgen.core import run_quiet_cli


def main() -> None:
    run_quiet_cli("qvgen.train.cli")


if __name__ == "__main__":
    main()
