"""The `qvgen` console script: known third-party import noise dropped, then `qvgen.demo.cli.main`.

A module outside `qvgen.demo` so the filter is in place before that package imports torchao/diffusers.
"""

from __future__ import annotations

from qvgen.core import run_quiet_cli


def main() -> None:
    run_quiet_cli("qvgen.demo.cli")


if __name__ == "__main__":
    main()
