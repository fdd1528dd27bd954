"""``pgharness`` console script: ``pgharness doctor [--rootdir DIR]``.

The doctor runs inside pytest (``pytest --pg-doctor``) so that it reads the same settings
the tests will: ``[tool.pytest.ini_options]`` in pyproject.toml, pytest.ini, tox.ini or
setup.cfg, the ``pythonpath`` ini key and the root ``conftest.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pgharness",
        description="pgharness: PostgreSQL test harness for async SQLAlchemy and FastAPI.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser(
        "doctor",
        help="inspect the settings, the app, env.py and the tests for set-ups that make "
        "database tests fail; exit status 1 if there is a problem (advice alone: 0)",
    )
    doctor.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        help="the project directory (where pyproject.toml or pytest.ini is); default: here",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_doctor_command(args.rootdir)


def run_doctor_command(rootdir: Path) -> int:
    import pytest

    directory = rootdir.resolve()
    if not directory.is_dir():
        print(f"pgharness doctor: --rootdir {directory} is not a directory", file=sys.stderr)
        return 2
    return int(
        pytest.main(
            [str(directory), "--rootdir", str(directory), "--pg-doctor", "-p", "no:cacheprovider"]
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
