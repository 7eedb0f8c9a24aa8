"""``python -m benchmarks <suite> [flags]``: run one suite; ``--help`` lists them."""

from __future__ import annotations

import importlib
import sys

from benchmarks.suites import SUITES, summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, SUITES))
        listing = "\n".join(f"  {name:<{width}}  {summary(name)}" for name in SUITES)
        print(
            "usage: python -m benchmarks <suite> [flags]   (from the repository root)\n\n"
            f"suites (python -m benchmarks <suite> --help for each one's flags):\n{listing}"
        )
        return
    if argv[0] not in SUITES:
        sys.exit(f"python -m benchmarks: no suite {argv[0]!r}; choose one of {', '.join(SUITES)}")
    importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
