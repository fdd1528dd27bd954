"""``pgharness`` console script (``pgharness doctor``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(f"pgharness: unknown command {' '.join(args)!r}; try 'pgharness doctor'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
