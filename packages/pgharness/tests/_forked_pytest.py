"""Inner ``pytest`` commands in fresh processes, without paying each time for the imports that
every such process makes.

A fork server imports, once, what every pytest process with pgharness installed imports before
its first test: pytest itself; SQLAlchemy and asyncpg, which pgharness's blocker hooks before
the first ``conftest.py``; psycopg, for pgharness's own server connection; the modules of the
installed pytest plugins the commands leave enabled (pgharness's own among them), imported
through pytest's assertion-rewriting hook as a command's pytest imports them; and a few
libraries most commands import next (``PRELOAD``; FastAPI, with anyio rewritten as pytest
rewrites a plugin's package). It also parses, for pytest's tracebacks, the modules the commands'
failures show most (``PARSE_AHEAD``). On a 2-core machine that saves each command 0.47 s of
library imports (0.05 s of it psycopg) and about 0.3 s more for one that imports FastAPI; the
plugins' imports and the parses ahead took a further 2-3% off this suite's CPU, measured side by
side (a run starts a few hundred commands). Each command is then a child forked from that server
which becomes the command: its working directory, environment, ``sys.path`` and ``sys.argv`` as
the command would have set them, its output in files, and an ordinary interpreter exit
(``atexit`` handlers run, coverage data is saved). Nothing of a project or of pytest's
configuration is loaded before the fork, and importing pgharness only defines things: each
command configures and starts pgharness as a new process does, except that psycopg is already
imported, so the blocker hooks it at once instead of as it loads, a path the ``unforked``
fixture keeps tested in a new interpreter.

A command it cannot reproduce exactly (not ``python -m pytest`` or the environment's ``pytest``
script; an interpreter setting read at start-up, such as ``PYTHONWARNINGS``, differs from the
server's) runs as an ordinary subprocess instead.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Imported by the server, those installed: what a pytest process with pgharness imports before
#: its first test, and what most of this suite's commands import next (pytest-randomly imports
#: NumPy when it is installed, the app clients import httpx). None of them has a pytest plugin:
#: pytest would warn that such a module, already imported, cannot be rewritten.
PRELOAD = ("pytest", "sqlalchemy", "sqlalchemy.ext.asyncio", "asyncpg", "psycopg", "httpx", "numpy")
#: Imported next, through pytest's assertion-rewriting hook, as a command's pytest would import
#: them: FastAPI imports anyio, whose package pytest rewrites (anyio has a pytest plugin), so
#: the command's pytest finds anyio rewritten, as in a new process, and has nothing to warn of.
PRELOAD_REWRITING_PLUGINS = ("fastapi",)
#: Parsed by the server for pytest's tracebacks (``_traceback_ast``): the modules whose frames
#: the commands' failures show most, each parsed again by a child otherwise (8 to 29 times in a
#: run of this suite, counted before they were parsed ahead).
PARSE_AHEAD = (
    "sqlalchemy.util.concurrency",
    "sqlalchemy.engine.base",
    "sqlalchemy.engine.default",
    "sqlalchemy.orm.session",
    "sqlalchemy.orm.loading",
    "sqlalchemy.orm.context",
    "sqlalchemy.orm.attributes",
    "sqlalchemy.orm.state_changes",
    "sqlalchemy.sql.elements",
    "sqlalchemy.connectors.asyncio",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "sqlalchemy.ext.asyncio.session",
    "asyncpg.connection",
    "asyncpg.transaction",
    "pluggy._manager",
    "pluggy._caller",
    "_pytest.config",
    "_pytest.main",
    "_pytest.logging",
    "_pytest.cacheprovider",
)

_HERE = str(Path(__file__).resolve().parent)
_BIN = Path(sys.executable).parent
_PYTEST_SCRIPT = shutil.which("pytest", path=str(_BIN))
# Read by the interpreter as it starts (or by coverage's start-up hook): a forked child cannot
# change them, so a command whose environment differs there runs as a real subprocess.
_SET_PER_CHILD = {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE"}


def _fixed_at_start(env: dict[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in env.items()
        if key.startswith(("PYTHON", "COVERAGE_")) and key not in _SET_PER_CHILD
    }


# -- the server's side --------------------------------------------------------------------------


def serve() -> None:
    """Run as the server: preload, then fork one child per request read from stdin."""
    import gc
    import importlib
    import importlib.util

    import _traceback_ast

    for name in PRELOAD:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    _import_rewriting_plugins(
        [name for name in PRELOAD_REWRITING_PLUGINS if importlib.util.find_spec(name) is not None],
        _enabled_plugin_modules(),
    )
    _traceback_ast.keep_parses()
    _traceback_ast.parse_ahead(PARSE_AHEAD)
    # What the children share stays out of their collections (pytest collects five times as a
    # run ends); they never free it either way.
    gc.freeze()
    base_path = [entry for entry in sys.path if entry not in ("", _HERE)]
    _reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become(request, base_path)  # ends by raising SystemExit, in the child only
        _reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _reply({"status": os.waitstatus_to_exitcode(status)})


def _enabled_plugin_modules() -> list[str]:
    """The modules of the installed pytest plugins that the commands' ``PYTEST_ADDOPTS`` leaves
    enabled: each command's pytest imports them all (pgharness's among them) before reading
    its arguments."""
    import importlib.metadata
    import itertools
    import shlex

    words = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    disabled = {
        value.removeprefix("no:")
        for option, value in itertools.pairwise(words)
        if option == "-p" and value.startswith("no:")
    }
    return sorted(
        {
            entry.module
            for entry in importlib.metadata.entry_points(group="pytest11")
            if entry.name not in disabled
        }
    )


class _PytestDefaults:
    """What pytest's assertion-rewriting hook reads of a run's ``Config``, at pytest's defaults."""

    def __init__(self) -> None:
        from _pytest.assertion import AssertionState
        from _pytest.assertion.rewrite import assertstate_key
        from _pytest.stash import Stash
        from pluggy._tracing import TagTracer

        self.trace = TagTracer().get("config")
        self.stash = Stash()
        self.stash[assertstate_key] = AssertionState(self, "rewrite")  # type: ignore[arg-type]

    def getini(self, name: str) -> object:
        defaults = {"python_files": ["test_*.py", "*_test.py"], "enable_assertion_pass_hook": False}
        return defaults[name]

    def issue_config_time_warning(self, warning: Warning, stacklevel: int) -> None:
        raise AssertionError(f"a module with a pytest plugin was preloaded: {warning}")


def _import_rewriting_plugins(names: Sequence[str], plugins: Sequence[str]) -> None:
    """Import ``names``, then the ``plugins`` modules, with the packages of installed pytest
    plugins rewritten, as pytest does. A plugin's own package is rewritten even where its
    installation does not list its files (an editable install): a command's pytest may still
    mark it, from a ``-p`` option or a build's ``egg-info`` on ``sys.path``, and it must then
    find it rewritten, not warn."""
    import importlib
    import importlib.metadata

    from _pytest.assertion.rewrite import AssertionRewritingHook
    from _pytest.config import _iter_rewritable_modules

    hook = AssertionRewritingHook(_PytestDefaults())  # type: ignore[arg-type]
    plugin_files = (
        str(file)
        for dist in importlib.metadata.distributions()
        if any(entry.group == "pytest11" for entry in dist.entry_points)
        for file in dist.files or []
    )
    hook.mark_rewrite(*_iter_rewritable_modules(plugin_files))
    hook.mark_rewrite(*{plugin.split(".")[0] for plugin in plugins})
    sys.meta_path.insert(0, hook)
    try:
        for name in [*names, *plugins]:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(hook)


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _become(request: dict[str, Any], base_path: list[str]) -> None:
    """Turn this forked child into the requested ``pytest`` command."""
    import random

    streams = [
        (os.devnull, os.O_RDONLY, 0),
        (request["stdout"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 1),
        (request["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 2),
    ]
    for path, flags, target in streams:
        fd = os.open(path, flags, 0o644)
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    pythonpath = [
        os.path.abspath(entry)
        for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if entry
    ]
    sys.path[:] = [request["path0"], *pythonpath, *base_path]
    sys.argv = list(request["argv"])
    random.seed()  # a fresh process seeds from the OS; the fork shares the server's state

    import pytest

    raise SystemExit(pytest.console_main())


# -- the test run's side ------------------------------------------------------------------------


class ForkedProcess:
    """The ``subprocess.Popen`` surface ``Pytester.run`` uses, for one forked command."""

    def __init__(self, server: ForkServer, args: Sequence[str], pid: int) -> None:
        self.server = server
        self.args = list(args)
        self.pid = pid
        self.stdin = None
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.status(self, timeout)
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, 9)


class ForkServer:
    """One server per test process, started on first use; ``close`` ends it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._started_with: dict[str, str] = {}
        self._running: ForkedProcess | None = None
        self._pending = b""

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        env: dict[str, str],
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run(args, capture_output=True, text=True)``, forked when it can be."""
        with tempfile.TemporaryDirectory(prefix="forked-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            forked = self.popen(args, cwd=cwd, env=env, stdout=out, stderr=err)
            if forked is None:
                return subprocess.run(
                    args,
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            try:
                code = forked.wait(timeout)
            except subprocess.TimeoutExpired:
                forked.kill()
                forked.wait()
                raise
            return subprocess.CompletedProcess(
                args, code, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8")
            )

    def popen(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        cwd: str | os.PathLike[str],
        env: dict[str, str],
        stdout: str | os.PathLike[str],
        stderr: str | os.PathLike[str],
    ) -> ForkedProcess | None:
        """Start ``args`` forked from the server, or return None if it must be a subprocess."""
        words = [os.fspath(arg) for arg in args]
        command = self._command(words, os.fspath(cwd))
        if command is None or self._running is not None:
            return None
        process = self._server()
        if _fixed_at_start(env) != _fixed_at_start(self._started_with):
            return None
        request = {
            **command,
            "cwd": os.fspath(cwd),
            "env": env,
            "stdout": os.fspath(stdout),
            "stderr": os.fspath(stderr),
        }
        assert process.stdin is not None
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        forked = ForkedProcess(self, words, int(self._read(None)["pid"]))
        self._running = forked
        return forked

    def status(self, forked: ForkedProcess, timeout: float | None) -> int:
        assert forked is self._running
        try:
            code = int(self._read(timeout)["status"])
        except TimeoutError:
            raise subprocess.TimeoutExpired(forked.args, timeout or 0) from None
        self._running = None
        return code

    def close(self) -> None:
        if self._process is not None:
            if self._running is not None:
                self._running.kill()
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(timeout=30)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    @staticmethod
    def _command(words: list[str], cwd: str) -> dict[str, Any] | None:
        """``path0`` and ``argv`` as ``python -m pytest`` or the ``pytest`` script sets them."""
        python = [sys.executable]
        if words[:2] == [*python, "-mpytest"] or words[:3] == [*python, "-m", "pytest"]:
            rest = words[2:] if words[1] == "-mpytest" else words[3:]
            import pytest

            main = str(Path(pytest.__file__).with_name("__main__.py"))
            return {"path0": os.path.abspath(cwd), "argv": [main, *rest]}
        if _PYTEST_SCRIPT and words[0] == _PYTEST_SCRIPT:
            return {"path0": str(Path(_PYTEST_SCRIPT).resolve().parent), "argv": words}
        return None

    def _server(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
            code = (
                f"import sys; sys.path.insert(0, {_HERE!r}); "
                "import _forked_pytest; _forked_pytest.serve()"
            )
            self._process = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=_HERE,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self._started_with = env
            self._running = None
            self._pending = b""
            self._read(120)  # ready
        return self._process

    def _read(self, timeout: float | None) -> dict[str, Any]:
        """The server's next message (its replies are lines: a child's pid, then its status)."""
        assert self._process is not None
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                self._process = None
                raise RuntimeError("the fork server ended unexpectedly")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message
