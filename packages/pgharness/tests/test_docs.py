"""The docs run: every code block of the README and the guides builds and runs a real project.

Each ``<!-- doctest: project=... -->`` comment (see ``_doc_blocks``) puts the block below it
into a pytester project, in document order; ``run`` blocks are run as the reader would run
them (the ``pytest`` command in a fresh process, forked by ``_forked_pytest``, in the project's
folder) and their outcome and
quoted output are checked. A code or command block with no doctest comment fails
``test_every_code_block_is_run_or_says_why_not``: the docs cannot drift from what runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from _diagnostics_project import scratch_database
from _doc_blocks import RUNNABLE_LANGUAGES, Block, Project, Step, parse_blocks, projects_of
from _forked_pytest import ForkServer
from conftest import INNER_ADDOPTS

PACKAGE = Path(__file__).resolve().parents[1]
REPOSITORY = PACKAGE.parents[1]
GUIDES = [
    REPOSITORY / "docs" / name
    for name in ("testing-guide.md", "troubleshooting.md", "architecture.md", "migrating.md")
]
DOCS = [PACKAGE / "README.md", *(guide for guide in GUIDES if guide.exists())]

# Taken before pytester changes HOME: inner runs share the user's initdb cache, as a reader's do.
_ENVIRONMENT = dict(os.environ)
_PYTEST = shutil.which("pytest", path=str(Path(sys.executable).parent))
RUN_TIMEOUT = 240


def _inner_environment(extra: dict[str, str]) -> dict[str, str]:
    """The reader's environment: none of the outer run's pytest or pgharness settings.

    Without ``PGHARNESS_URL`` the projects get the embedded server the docs promise, also in
    CI's run against an external server.
    """
    env = {
        key: value
        for key, value in _ENVIRONMENT.items()
        if not key.startswith(("PYTEST_", "PGHARNESS_URL", "DATABASE_URL"))
    }
    env["PYTEST_ADDOPTS"] = INNER_ADDOPTS  # the reader has pgharness, not Dashtam's test tools
    # Steps rewrite a file between runs faster than a bytecode cache can tell (same second).
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def _database_environment(directive: dict[str, str], asyncpg_url: str) -> dict[str, str]:
    """``DATABASE_URL`` (asyncpg), plus ``database_env="NAME=psycopg ..."`` variables."""
    urls = {"asyncpg": asyncpg_url, "psycopg": asyncpg_url.replace("+asyncpg", "+psycopg", 1)}
    env = {"DATABASE_URL": asyncpg_url}
    for pair in directive.get("database_env", "").split():
        name, _, driver = pair.partition("=")
        env[name] = urls[driver]
    return env


def _command(block: Block) -> list[str]:
    assert block.directive is not None
    text = block.directive["run"] if block.directive.get("run") else block.text
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(lines) == 1, f"{block.where}: a run block holds exactly one command, got {lines}"
    words = shlex.split(lines[0].split(" #", 1)[0])
    assert words[0] == "pytest", f"{block.where}: only pytest commands are run, not {words[0]!r}"
    program = [_PYTEST] if _PYTEST else [sys.executable, "-m", "pytest"]
    return [*program, *words[1:]]


def _expected(block: Block) -> tuple[dict[str, int], int | None]:
    outcomes: dict[str, int] = {}
    exit_code: int | None = None
    assert block.directive is not None
    for word in block.directive.get("expect", "").split():
        key, _, value = word.partition("=")
        if key == "exit":
            exit_code = int(value)
        else:  # pytest's summary says "1 error", parseoutcomes() "errors"
            outcomes[{"error": "errors", "warning": "warnings"}.get(key, key)] = int(value)
    return outcomes, exit_code


def _run(
    project_dir: Path, block: Block, env: dict[str, str], fork_server: ForkServer
) -> pytest.RunResult:
    started = time.monotonic()
    completed = fork_server.run(  # the reader's command, in a fresh process
        _command(block), cwd=project_dir, env=env, timeout=RUN_TIMEOUT
    )
    return pytest.RunResult(
        completed.returncode,
        completed.stdout.splitlines(),
        completed.stderr.splitlines(),
        time.monotonic() - started,
    )


def _line_matches(wanted: str, line: str) -> bool:
    """``wanted`` is in ``line``; a ``...`` inside it stands for anything."""
    position = 0
    for part in wanted.split("..."):
        found = line.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


def _assert_lines_in_order(block: Block, result: pytest.RunResult) -> None:
    output = [*result.outlines, *result.errlines]
    position = 0
    for wanted in (line.strip() for line in block.text.splitlines()):
        if not wanted or wanted == "...":
            continue
        for index in range(position, len(output)):
            if _line_matches(wanted, output[index]):
                position = index + 1
                break
        else:
            shown = "\n".join(output)
            pytest.fail(f"{block.where}: the docs show {wanted!r}, the run printed:\n{shown}")


def _write(project_dir: Path, block: Block, path_text: str, *, replace: bool = False) -> None:
    path = project_dir / path_text
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w" if replace else "a", encoding="utf-8") as file:
        if file.tell():
            file.write("\n\n")
        file.write(block.text)


def _check_outcome(block: Block, result: pytest.RunResult) -> None:
    outcomes, exit_code = _expected(block)
    shown = "\n".join([*result.outlines, *result.errlines])
    if exit_code is not None:
        assert result.ret == exit_code, (
            f"{block.where}: exit {result.ret}, not {exit_code}\n{shown}"
        )
    if outcomes:
        found = result.parseoutcomes()
        for word, count in outcomes.items():
            actual = found.get(word, 0)
            assert actual == count, f"{block.where}: {word}={actual}, not {count}\n{shown}"
        unexpected = {"failed", "errors"} & set(found) - set(outcomes)
        assert not unexpected, f"{block.where}: unexpected {unexpected}\n{shown}"
    if block.directive is not None and block.directive.get("warnings") == "none":
        # pytest's summary counts test warnings only: a plugin's configuration warning
        # (pytest-asyncio's unset loop scope) is printed before the header
        warned = [line for line in shown.splitlines() if "warning" in line.lower()]
        assert not warned, f"{block.where}: the run warned:\n{shown}"


ALL_PROJECTS = projects_of(DOCS)
# The migration guide's projects run in pairs (test_each_migration_runs_before_and_after).
MIGRATION_GUIDE = REPOSITORY / "docs" / "migrating.md"
PROJECTS = [project for project in ALL_PROJECTS if project.doc != MIGRATION_GUIDE]
MIGRATIONS = sorted(
    {
        project.name.removesuffix("-before")
        for project in ALL_PROJECTS
        if project.doc == MIGRATION_GUIDE and project.name.endswith("-before")
    }
)


def _project(doc: Path, name: str) -> Project:
    found = [p for p in ALL_PROJECTS if p.doc == doc and p.name == name]
    assert found, f"{doc.name} builds no project {name!r}"
    return found[0]


def _base_files(project: Project) -> list[Step]:
    if project.base is None:
        return []
    base = _project(project.doc, project.base)
    return [*_base_files(base), *(step for step in base.steps if step.kind == "file")]


class _ProjectRun:
    """One docs project being built and run in a pytester folder, step by step."""

    def __init__(self, folder: Path, stack: ExitStack, fork_server: ForkServer) -> None:
        self.folder = folder
        self.stack = stack
        self.fork_server = fork_server
        self.last: pytest.RunResult | None = None
        self.written: set[str] = set()  # a project's own first write replaces its base's file
        self.pending: list[Block] = []  # output quoted before the command that prints it

    def write(self, step: Step) -> None:
        path = step.directive["file"]
        _write(self.folder, step.block, path, replace=path not in self.written)
        self.written.add(path)

    def run(self, step: Step) -> None:
        extra: dict[str, str] = {}
        if step.directive.get("database") == "scratch":
            url = self.stack.enter_context(scratch_database())
            extra = _database_environment(step.directive, url)
        self.last = _run(self.folder, step.block, _inner_environment(extra), self.fork_server)
        for shown in self.pending:
            _assert_lines_in_order(shown, self.last)
        self.pending.clear()
        _check_outcome(step.block, self.last)

    def show(self, step: Step) -> None:
        if self.last is None:
            self.pending.append(step.block)
        else:
            _assert_lines_in_order(step.block, self.last)


def _build_and_run(project: Project, folder: Path, fork_server: ForkServer) -> None:
    for module in sorted(project.requires):
        pytest.importorskip(module, reason=f"{project.id} needs {module} installed")
    for step in _base_files(project):
        _write(folder, step.block, step.directive["file"])
    with ExitStack() as stack:
        run = _ProjectRun(folder, stack, fork_server)
        for step in project.steps:
            if step.kind == "file":
                run.write(step)
            if step.kind == "run" or (step.kind == "file" and step.directive.get("run")):
                run.run(step)
            if step.kind == "output":
                run.show(step)
    assert run.last is not None, f"{project.id}: the project is never run"
    assert not run.pending, f"{project.id}: output shown for a run that never comes"


@pytest.mark.parametrize("project", PROJECTS, ids=lambda project: project.id)
def test_the_docs_project_runs_as_shown(
    project: Project, pytester: pytest.Pytester, fork_server: ForkServer
) -> None:
    _build_and_run(project, pytester.path, fork_server)


@pytest.mark.parametrize("migration", MIGRATIONS)
def test_each_migration_runs_before_and_after(
    migration: str, pytester: pytest.Pytester, fork_server: ForkServer
) -> None:
    """The hand-written conftest passes its tests, and so does the pgharness set-up replacing it."""
    for side in ("before", "after"):
        project = _project(MIGRATION_GUIDE, f"{migration}-{side}")
        _build_and_run(project, pytester.mkdir(side), fork_server)


def test_the_migration_guide_runs_every_project_in_a_pair() -> None:
    names = {project.name for project in ALL_PROJECTS if project.doc == MIGRATION_GUIDE}
    paired = {f"{migration}-{side}" for migration in MIGRATIONS for side in ("before", "after")}
    bases = {project.base for project in ALL_PROJECTS if project.doc == MIGRATION_GUIDE}
    assert MIGRATIONS
    assert names - paired <= bases, (
        f"projects that are neither a pair's half nor a base: {names - paired - bases}"
    )


def _claimed(block: Block) -> bool:
    directive = block.directive or {}
    return bool(directive.get("project") or directive.get("skip"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_code_block_is_run_or_says_why_not(doc: Path) -> None:
    unclaimed = [
        block.where
        for block in parse_blocks(doc)
        if block.lang in RUNNABLE_LANGUAGES and not _claimed(block)
    ]
    assert not unclaimed, f"code blocks with no doctest comment (project= or skip=): {unclaimed}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_relative_link_leads_to_a_file(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", text)
    broken = [target for target in targets if not (doc.parent / target).exists()]
    assert not broken, f"{doc.name} links to files that do not exist: {broken}"


def test_the_guides_exist() -> None:
    missing = [guide.name for guide in GUIDES if not guide.exists()]
    assert not missing, f"docs/ lacks {missing}"
