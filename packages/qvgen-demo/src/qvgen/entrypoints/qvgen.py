"""The `qvgen` console script: known third-party import noise dropped, then `qvgen.demo.cli.main`.

A module outside `qvgen.demo` so the filter is in place before that package imports torchao/diffusers.
"""

from __future__ import annotations

import sys

from qvgen.core import silence_known_import_noise


def main() -> None:
    silence_known_import_noise()
    from qvgen.demo.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
