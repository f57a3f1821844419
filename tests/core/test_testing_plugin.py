"""runbook.testing as a user meets it: fixtures in their own suite, and ``pytest --runbooks``."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

DEPLOY = """
    from runbook import param, rollback, step

    version = param("version")

    @step(reversible=True, retries=3, backoff=30)
    def install(shell, params, clock):
        clock.sleep(600)  # bake: no wall time under the fake clock
        return shell(f"deployctl install {params.version}").stdout.strip()

    @rollback(install)
    def uninstall(shell, params):
        shell(f"deployctl uninstall {params.version}")

    @step(approval=True)
    def switch(install, router):
        router.switch("web", to="green")
        return install
"""


def test_fixtures_work_in_a_users_suite(pytester: pytest.Pytester):
    pytester.makepyfile(deploy=textwrap.dedent(DEPLOY))
    pytester.makepyfile(
        test_deploy="""
        from pathlib import Path

        HERE = Path(__file__).parent / "deploy.py"


        def test_deploys(runbook_runner, fake_shell, fake_clock, fake_router, fake_notifier):
            fake_shell.on("deployctl install *", stdout="installed\\n")
            result = runbook_runner.run(HERE, version="1.0", runner={"protection": "none"})
            assert result.status == "succeeded", result.error
            assert result.steps["switch"].output == "installed"
            assert fake_shell.calls == ["deployctl install 1.0"]
            assert fake_clock.elapsed == 600
            assert fake_router.active("web") == "green"
            assert "run_finished" in fake_notifier.kinds()


        def test_pauses_then_approved(runbook_runner):
            paused = runbook_runner.run(HERE, version="2.0")
            assert paused.status == "paused"
            runbook_runner.runner(actor="bob").approve(paused.run_id, actor="bob")
            assert runbook_runner.runner().resume(paused.run_id).status == "succeeded"


        def test_failed_install_rolls_back(runbook_runner, fake_shell, fake_clock):
            fake_shell.on("deployctl install *", returncode=1, stderr="disk full")
            result = runbook_runner.run(HERE, version="3.0")
            assert result.status == "rolled_back"
            assert "disk full" in result.steps["install"].error
            assert fake_shell.calls[-1] == "deployctl uninstall 3.0"
            assert len(fake_clock.sleeps) == 4 + 3  # four bakes, three backoffs
    """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fixture_failures_are_reported_like_any_test_failure(pytester: pytest.Pytester):
    pytester.makepyfile(deploy=textwrap.dedent(DEPLOY))
    pytester.makepyfile(
        test_deploy="""
        from pathlib import Path


        def test_wrong_expectation(runbook_runner, fake_shell):
            result = runbook_runner.run(Path(__file__).parent / "deploy.py", version="1.0",
                                        runner={"protection": "none"})
            assert fake_shell.calls == ["something else"]
    """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*deployctl install 1.0*"])


RUNBOOKS = {
    "good": """
        from runbook import param, step
        replicas = param("replicas", type=int, choices=range(1, 4))

        @step
        def scale(shell, params):
            shell(f"kubectl scale --replicas={params.replicas}")
    """,
    "broken": """
        from runbook import step

        @step
        def scale(shel):
            pass
    """,
    "failing": """
        from runbook import step

        @step
        def explode():
            raise RuntimeError("kaboom")
    """,
    "skipped": """
        from runbook import step
        TEST = {"skip": "needs the production VPN"}

        @step
        def explode():
            raise RuntimeError("must not run")
    """,
    "steered": """
        from runbook import param, resource, rollback, step
        target = param("target")
        TEST = {"params": {"target": "eu-1"}, "expect": "rolled_back",
                "resources": {"marker": lambda tmp: str(tmp)}}

        @resource
        def marker():
            raise RuntimeError("the real marker must be replaced by TEST resources")

        @step(reversible=True)
        def claim(params, marker):
            assert params.target == "eu-1" and marker
            return params.target

        @rollback(claim)
        def release(claim):
            pass

        @step
        def fail(claim):
            raise RuntimeError("expected failure")
    """,
    "wrong_expectation": """
        from runbook import step
        TEST = {"expect": "rolled_back"}

        @step
        def fine():
            pass
    """,
}


@pytest.fixture
def runbooks_dir(pytester: pytest.Pytester):
    folder = pytester.mkdir("runbooks")
    for name, source in RUNBOOKS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    (folder / "runbookconf.py").write_text("")  # never collected as a runbook
    (folder / "_helpers.py").write_text("raise RuntimeError('not a runbook')\n")
    return folder


def test_pytest_runbooks_collects_each_runbook_as_an_item(pytester, runbooks_dir):
    result = pytester.runpytest(
        "--runbooks", str(runbooks_dir), "--collect-only", "-q", "-p", "no:cacheprovider"
    )
    result.stdout.fnmatch_lines(["*broken.py::run[[]broken[]]*", "*good.py::run[[]good[]]*"])
    assert "runbookconf" not in result.stdout.str() and "_helpers" not in result.stdout.str()
    assert result.stdout.str().count("::run[") == len(RUNBOOKS)


def test_pytest_runbooks_passes_fails_and_skips(pytester, runbooks_dir):
    result = pytester.runpytest("--runbooks", str(runbooks_dir), "-rA", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3, skipped=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*definition error*parameter 'shel' is not a step, resource or built-in*did you mean*",
        ]
    )
    assert "run failed (expected succeeded)" in out and "RuntimeError: kaboom" in out
    assert "run succeeded (expected rolled_back)" in out
    assert "needs the production VPN" in out
    assert "must not run" not in out
    assert "PASSED runbooks/good.py::run[good]" in out
    assert "PASSED runbooks/steered.py::run[steered]" in out


def test_without_the_option_runbooks_are_not_collected(pytester, runbooks_dir):
    result = pytester.runpytest(str(runbooks_dir), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_test_dict_can_provide_a_resource_the_runbook_gets_from_a_plugin(pytester):
    folder = pytester.mkdir("runbooks")
    (folder / "k8s_scale.py").write_text(
        textwrap.dedent("""
        from runbook import step
        TEST = {"resources": {"k8s": {"replicas": 3}}}

        @step
        def scale(k8s):  # in production ``k8s`` comes from a plugin
            return k8s["replicas"]
    """)
    )
    result = pytester.runpytest("--runbooks", str(folder), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_fake_clock_time_is_the_same_in_worker_threads(fake_clock, tmp_path):
    """Sync steps run in threads; they must see the fake time the engine sees."""
    import datetime as dt

    from runbook import Runner

    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "clocky.py"
    path.write_text(
        "import datetime, time\n"
        "from runbook import step\n"
        "@step\n"
        "def when_sync(clock):\n"
        "    clock.sleep(3600)\n"
        "    return [datetime.datetime.now(datetime.UTC).isoformat(), time.time()]\n"
    )
    result = Runner(resources={"clock": fake_clock}, actor="t").run(path)
    stamp, epoch = result.steps["when_sync"].output
    expected = dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC)
    assert dt.datetime.fromisoformat(stamp) == expected
    assert epoch == expected.timestamp()
