"""Activation follows what a test really uses, and a misspelled setting stops the run."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

STARTED = "pgharness: embedded PostgreSQL"


def test_a_projects_own_client_and_db_fixtures_do_not_activate_pgharness(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(
        """
        import pytest

        @pytest.fixture
        def client():
            return "the project's own client"

        @pytest.fixture
        def db():
            return {"rows": []}
        """
    )
    project.makepyfile(
        """
        def test_uses_its_own_fixtures(client, db):
            assert client == "the project's own client"
            assert db == {"rows": []}
        """
    )
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert STARTED not in result.stdout.str()


def test_a_project_fixture_built_on_a_pgharness_fixture_activates_it(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(
        """
        import pytest

        @pytest.fixture
        def database_name(pg_database):
            return pg_database.name
        """
    )
    project.makepyfile(
        """
        def test_through_a_project_fixture(database_name):
            assert database_name.startswith("pgh_")
        """
    )
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert STARTED in result.stdout.str()


@pytest.mark.parametrize(
    "listing", ["--fixtures", "--fixtures-per-test", "--markers", "--collect-only"]
)
def test_listing_options_start_nothing(project: pytest.Pytester, listing: str) -> None:
    make_project(project)
    project.makepyfile(
        """
        def test_register(client, db):
            pass
        """
    )
    result = project.runpytest(listing)
    assert result.ret == 0, result.stdout.str()
    assert STARTED not in result.stdout.str()
    assert "pgh_tpl_" not in result.stdout.str()


def test_a_misspelled_setting_stops_the_run_with_did_you_mean(project: pytest.Pytester) -> None:
    make_project(project)
    ini = project.path / "pytest.ini"
    ini.write_text(ini.read_text().replace("pgharness_sessionmakers", "pgharness_sessionmaker"))
    project.makepyfile("def test_register(client):\n    pass\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*pgharness: unknown ini key 'pgharness_sessionmaker': "
            "did you mean 'pgharness_sessionmakers'?*"
        ]
    )
