"""DESIGN 18: ``pytest --runbooks`` and ``runbook_runner`` never reach a real system, and the
testing helpers behave with and without freezegun, leaving pytest's own timer alone."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

# A resource that touches the real world: it leaves a marker file where the test can see it.
REAL = """
    from pathlib import Path
    from runbook import resource, step

    MARKER = Path(__file__).with_name("TOUCHED")

    def _fake_db():
        return {"fake": True}

    @resource{decorator}
    def db():
        MARKER.write_text("the real database was reached")
        return {"fake": False}

    @step
    def migrate(db):
        return db["fake"]
"""


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_an_unfaked_resource_fails_the_item_naming_it_and_the_ways(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    _write(folder, "migrate", REAL.replace("{decorator}", ""))
    result = pytester.runpytest("--runbooks", str(folder), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "resource(s) 'db' (" in out and "would reach a real system in a test" in out
    assert 'TEST = {"resources": {"db": lambda tmp: ...}}' in out
    assert "runbook_runner.run(path, runner=" in out and "@resource(fake=make_fake_db)" in out
    assert not (folder / "TOUCHED").exists()


def test_a_declared_fake_is_used_instead(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    _write(folder, "migrate", REAL.replace("{decorator}", "(fake=_fake_db)"))
    _write(
        folder,
        "test_it",
        """
        from pathlib import Path

        def test_runner_uses_the_fake(runbook_runner):
            result = runbook_runner.run(Path(__file__).with_name("migrate.py"))
            assert result.steps["migrate"].output is True
        """,
    )
    result = pytester.runpytest(
        "--runbooks", str(folder), str(folder / "test_it.py"), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    assert not (folder / "TOUCHED").exists()


def test_test_dict_replaces_the_resource(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    source = textwrap.dedent(REAL.replace("{decorator}", ""))
    _write(folder, "migrate", source + '\nTEST = {"resources": {"db": {"fake": True}}}\n')
    result = pytester.runpytest("--runbooks", str(folder), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (folder / "TOUCHED").exists()


def test_runbookconf_resources_must_be_faked_too(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    (pytester.path / "pyproject.toml").touch()
    _write(
        folder,
        "runbookconf",
        """
        from runbook import resource

        @resource
        def cloud():
            raise AssertionError("the real cloud API was called")
        """,
    )
    _write(folder, "scale", "from runbook import step\n@step\ndef up(cloud):\n    return 1\n")
    result = pytester.runpytest("--runbooks", str(folder), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "resource(s) 'cloud' (" in result.stdout.str()
    assert "runbookconf.py" in result.stdout.str()
    assert "the real cloud API was called" not in result.stdout.str()


def test_runbook_runner_refuses_unfaked_resources_and_takes_replacements(
    pytester: pytest.Pytester,
):
    folder = pytester.mkdir("runbooks")
    _write(folder, "migrate", REAL.replace("{decorator}", ""))
    _write(
        folder,
        "test_it",
        """
        from pathlib import Path

        import pytest
        from runbook.testing.plugin import UnfakedResource

        HERE = Path(__file__).with_name("migrate.py")

        def test_refused(runbook_runner):
            with pytest.raises(UnfakedResource, match="'db'"):
                runbook_runner.run(HERE)

        def test_replaced(runbook_runner):
            result = runbook_runner.run(HERE, runner={"resources": {"db": {"fake": True}}})
            assert result.steps["migrate"].output is True
        """,
    )
    result = pytester.runpytest(str(folder / "test_it.py"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert not (folder / "TOUCHED").exists()


def test_runbook_runner_freezes_datetime_only_when_asked(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    _write(
        folder,
        "when",
        """
        import datetime
        from runbook import step

        @step
        def now():
            return datetime.datetime.now(datetime.UTC).timestamp()
        """,
    )
    _write(
        folder,
        "test_it",
        """
        import datetime
        import time
        from pathlib import Path

        HERE = Path(__file__).with_name("when.py")

        FROZEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()

        def test_real_time(runbook_runner):
            stamp = runbook_runner.run(HERE).steps["now"].output
            assert stamp != FROZEN and abs(stamp - time.time()) < 300

        def test_fake_time(runbook_runner, fake_clock):
            assert runbook_runner.clock is fake_clock
            assert runbook_runner.run(HERE).steps["now"].output == FROZEN
        """,
    )
    result = pytester.runpytest(str(folder / "test_it.py"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_durations_are_real_under_the_fake_clock(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_slow_bake="""
        def test_bake(fake_clock):
            fake_clock.sleep(3600)   # an hour of fake time
            fake_clock.advance(86400)
        """
    )
    result = pytester.runpytest("--durations=0", "--durations-min=0", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    seconds = [
        float(s)
        for s in re.findall(r"^([\d.]+)s (?:setup|call|teardown)", result.stdout.str(), re.M)
    ]
    assert seconds and max(seconds) < 60, result.stdout.str()


def test_without_freezegun_fixtures_say_what_to_install(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    _write(folder, "plain", "from runbook import step\n@step\ndef a(clock):\n    clock.sleep(60)\n")
    pytester.makeconftest(
        """
        import sys
        sys.modules["freezegun"] = None  # as if not installed: importing it raises ImportError
        """
    )
    _write(
        folder,
        "test_it",
        """
        from pathlib import Path

        def test_runner_needs_no_freezegun(runbook_runner):
            result = runbook_runner.run(Path(__file__).with_name("plain.py"))
            assert result.status == "succeeded" and runbook_runner.clock.sleeps == [60]

        def test_fake_clock_explains(fake_clock):
            pass
        """,
    )
    result = pytester.runpytest_subprocess(
        "--runbooks", str(folder), str(folder / "test_it.py"), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2, errors=1)
    out = result.stdout.str()
    assert "pip install 'runbook[testing]'" in out
    assert "Traceback" not in out and "ModuleNotFoundError" not in out


def test_the_testing_extra_brings_freezegun() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    testing = project["optional-dependencies"]["testing"]
    assert any(req.startswith("freezegun") for req in testing)
    assert any(req.startswith("pytest") for req in testing)
