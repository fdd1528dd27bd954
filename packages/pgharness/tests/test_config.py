"""Settings: precedence, and one clear message per bad setting (naming it, without a password)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXTERNAL_URL
from pgharness._config import mask_url, resolve_settings
from pgharness._errors import ConfigurationError

USES_DATABASE = """
    import pytest

    @pytest.mark.parametrize("n", range(3))
    def test_uses_database(pg_database, n):
        pass
"""


def _resolve(**overrides: object) -> object:
    values: dict[str, object] = {
        "option_url": None,
        "ini_url": None,
        "ini_schema": None,
        "ini_sessionmakers": [],
        "ini_app": None,
        "rootpath": Path("/project"),
        "environ": {},
    }
    values.update(overrides)
    return resolve_settings(**values)  # type: ignore[arg-type]


def test_command_line_beats_environment_beats_ini() -> None:
    env = {"PGHARNESS_URL": "postgresql://env@h/db"}
    ini = "postgresql://ini@h/db"

    by_option = _resolve(option_url="postgresql://opt@h/db", environ=env, ini_url=ini)
    by_env = _resolve(environ=env, ini_url=ini)
    by_ini = _resolve(ini_url=ini)
    by_default = _resolve()

    assert by_option.server_description() == "server=postgresql://opt@h/db (from option)"  # type: ignore[attr-defined]
    assert by_env.server_description() == "server=postgresql://env@h/db (from env)"  # type: ignore[attr-defined]
    assert by_ini.server_description() == "server=postgresql://ini@h/db (from ini)"  # type: ignore[attr-defined]
    assert by_default.server_description() == "server=embedded (from default)"  # type: ignore[attr-defined]


def test_schema_forms_and_lazy_object_references() -> None:
    settings = _resolve(
        ini_schema="alembic:migrations/alembic.ini",
        ini_sessionmakers=["app.db:SessionLocal", "", "app.db:SyncSession"],
        ini_app="app.main:create_app",
    )

    assert settings.schema.ini_path == Path("/project/migrations/alembic.ini")  # type: ignore[attr-defined]
    assert [str(ref) for ref in settings.sessionmakers] == [  # type: ignore[attr-defined]
        "app.db:SessionLocal",
        "app.db:SyncSession",
    ]
    assert str(settings.app) == "app.main:create_app"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"ini_schema": "models.Base"}, "pgharness_schema"),
        ({"ini_sessionmakers": ["app.db"]}, "pgharness_sessionmakers"),
        ({"ini_app": "app:main:app"}, "pgharness_app"),
        ({"ini_url": "mysql://root:hunter2@h/db"}, "pgharness_url"),
        ({"option_url": "postgresql://u:hunter2@h:notaport/db"}, "--pg-url"),
    ],
)
def test_bad_syntax_names_the_setting_and_hides_passwords(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        _resolve(**overrides)

    assert named in str(excinfo.value)
    assert "Fix:" in str(excinfo.value)
    assert "hunter2" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("overrides", "example"),
    [
        ({"ini_app": "myapp"}, "e.g. pgharness_app = myapp.main:app."),
        (
            {"ini_sessionmakers": ["myapp.db"]},
            "e.g. pgharness_sessionmakers = myapp.db:SessionLocal.",
        ),
    ],
    ids=["app", "sessionmakers"],
)
def test_a_malformed_reference_shows_an_example_of_what_its_setting_names(
    overrides: dict[str, object], example: str
) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        _resolve(**overrides)

    assert example in str(excinfo.value)


def test_mask_url_hides_only_the_password() -> None:
    assert (
        mask_url("postgresql+asyncpg://me:s3cret@db:5432/x")
        == "postgresql+asyncpg://me:***@db:5432/x"
    )
    assert mask_url("postgresql://me@db/x") == "postgresql://me@db/x"


def test_bad_url_in_ini_stops_pytest_at_start(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\npgharness_url = postgres ql://me:hunter2@db/x\n")
    project.makepyfile(USES_DATABASE)

    result = project.runpytest()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pgharness_url = * Fix:*"])
    assert "hunter2" not in result.stdout.str() + result.stderr.str()


def _exit_message(result: pytest.RunResult) -> str:
    output = result.stdout.str() + result.stderr.str()
    lines = [line for line in output.splitlines() if "Exit: " in line]
    assert len(lines) == 1, f"expected one message, got:\n{output}"
    return lines[0]


def test_unreachable_server_stops_the_run_with_one_message(project: pytest.Pytester) -> None:
    project.makepyfile(USES_DATABASE)

    result = project.runpytest("--pg-url=postgresql://me:hunter2@127.0.0.1:1/db")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = _exit_message(result)
    assert "cannot connect" in message
    assert "--pg-url" in message
    assert "postgresql://me:***@127.0.0.1:1/db" in message
    assert "hunter2" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes()  # no test ran, none errored one by one


def test_schema_that_does_not_import_stops_the_run(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\npgharness_schema = missing_models:Base\n")
    project.makepyfile(USES_DATABASE)

    result = project.runpytest(f"--pg-url={EXTERNAL_URL}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = _exit_message(result)
    assert "pgharness_schema = 'missing_models:Base'" in message
    assert "No module named 'missing_models'" in message


def test_schema_object_of_the_wrong_type_stops_the_run(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\npgharness_schema = models:Base\n")
    project.makepyfile(models="Base = 42", test_it=USES_DATABASE)

    result = project.runpytest(f"--pg-url={EXTERNAL_URL}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is a int, not a MetaData or a declarative base" in _exit_message(result)


def test_failing_migration_stops_the_run(project: pytest.Pytester) -> None:
    pytest.importorskip("alembic")
    project.makeini("[pytest]\npgharness_schema = alembic:alembic.ini\n")
    project.makefile(".ini", alembic="[alembic]\nscript_location = migrations\n")
    project.mkpydir("migrations")
    project.path.joinpath("migrations", "__init__.py").unlink()
    project.path.joinpath("migrations", "env.py").write_text(
        "from alembic import context\n"
        "from sqlalchemy import create_engine, text\n"
        "engine = create_engine(context.config.get_main_option('sqlalchemy.url'))\n"
        "with engine.connect() as conn:\n"
        "    conn.execute(text('SELECT * FROM table_that_does_not_exist'))\n"
    )
    project.makepyfile(USES_DATABASE)

    result = project.runpytest(f"--pg-url={EXTERNAL_URL}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = _exit_message(result)
    assert "could not build the schema from pgharness_schema = 'alembic:" in message
    assert "table_that_does_not_exist" in message
    output = result.stdout.str() + result.stderr.str()
    assert "Fix: make the migrations run against an empty database, or correct" in output


def test_unreachable_server_under_xdist_stops_the_run_once(project: pytest.Pytester) -> None:
    project.makepyfile(USES_DATABASE)

    result = project.runpytest("-n", "2", "--pg-url=postgresql://me:hunter2@127.0.0.1:1/db")

    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in output
    assert output.count("cannot connect to the PostgreSQL server") == 1
    assert "hunter2" not in output


def test_help_works_whatever_the_settings(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\npgharness_schema = not a schema\n")

    result = project.runpytest("--help")

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--pg-url=URL*", "*pgharness_schema (string)*"])


BOOM = "raise RuntimeError('imported')\n"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "pgharness_sessionmakers = models:engine",
            "pgharness_sessionmakers names 'models:engine', which is a "
            "sqlalchemy.ext.asyncio.engine.AsyncEngine, not an async_sessionmaker or sessionmaker."
            " Fix: name the factory your app calls for sessions",
        ),
        (
            "pgharness_sessionmakers = missing_db:SessionLocal",
            "pgharness_sessionmakers = 'missing_db:SessionLocal': importing 'missing_db' failed "
            "(ModuleNotFoundError: No module named 'missing_db'). Fix:",
        ),
        (
            "pgharness_app = models:settings",
            "pgharness_app names 'models:settings', a dict, which is neither an ASGI app nor a "
            "zero-argument factory. Fix:",
        ),
        (
            "pgharness_app = models:no_such_app",
            "pgharness_app = 'models:no_such_app': module 'models' has no attribute "
            "'no_such_app'. Fix:",
        ),
        (
            "pgharness_sessionmakers = models:engien",
            "pgharness_sessionmakers = 'models:engien': module 'models' has no attribute "
            "'engien'. Did you mean 'engine'? Fix: name an existing object in "
            "pgharness_sessionmakers.",
        ),
    ],
    ids=[
        "sessionmaker-wrong-type",
        "sessionmaker-not-importable",
        "app-not-an-app",
        "app-missing",
        "misspelled",
    ],
)
def test_a_setting_naming_the_wrong_object_stops_the_run_at_start(
    project: pytest.Pytester, setting: str, message: str
) -> None:
    project.makeini(f"[pytest]\n{setting}\n")
    project.makepyfile(
        models=(
            "from sqlalchemy.ext.asyncio import create_async_engine\n"
            "engine = create_async_engine('postgresql+asyncpg://app@db.invalid/app')\n"
            "settings = {}\n"
        ),
        test_it=USES_DATABASE,
    )

    result = project.runpytest(f"--pg-url={EXTERNAL_URL}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in _exit_message(result)
    result.assert_outcomes()  # stopped before the first test, not one error per test
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_wrong_sessionmaker_under_xdist_stops_the_run_once(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\npgharness_sessionmakers = missing_db:SessionLocal\n")
    project.makepyfile(USES_DATABASE)

    result = project.runpytest("-n", "2", f"--pg-url={EXTERNAL_URL}")

    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in output
    assert output.count("importing 'missing_db' failed") == 1


def test_a_run_without_database_tests_imports_no_app_object(project: pytest.Pytester) -> None:
    project.makeini(
        "[pytest]\npgharness_sessionmakers = boom:SessionLocal\npgharness_app = boom:app\n"
    )
    project.makepyfile(boom=BOOM, test_plain="def test_plain():\n    pass\n")

    result = project.runpytest()

    result.assert_outcomes(passed=1)
    assert "imported" not in result.stdout.str() + result.stderr.str()
