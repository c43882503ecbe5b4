"""The `qvgen-train` console script: known third-party import noise dropped, then `qvgen.train.cli.main`.

A module outside `qvgen.train` so the filter is in place before that package imports torchao/diffusers.
Under accelerate: ``accelerate launch -m qvgen.entrypoints.qvgen_train run CONFIG.yaml``.
"""

from __future__ import annotations

import sys

from qvgen.core import silence_known_import_noise


def main() -> None:
    silence_known_import_noise()
    from qvgen.train.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
