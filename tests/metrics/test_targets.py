"""Run metrics reach a real pushgateway and node_exporter's textfile format, and count on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runbook.errors import ConfigError, MetricsError, UsageError
from runbook.metrics import PushGateway, TextFile, open_metrics, parse
from runbook.metrics.exposition import Sample

from .conftest import _free_port


def _info(result):
    from runbook.context import RunInfo

    return RunInfo(
        run_id=result.run_id,
        runbook="web_deploy.py",
        name="web_deploy",
        sha256="0",
        env=result.env or "prod",
        actor="ci",
    )


def _series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in parse(text) if s.name == name}


@pytest.mark.slow
def test_pushgateway_receives_runs_and_counts_across_pushes(pushgateway: str, run_once) -> None:
    sink = open_metrics(f"pushgateway+{pushgateway}")
    assert isinstance(sink, PushGateway)
    ok, failed = run_once(), run_once(fail=True)
    assert ok.status == "succeeded" and failed.status == "rolled_back"
    sink.push(_info(ok), ok)
    sink.push(_info(failed), failed)
    sink.push(_info(ok), ok)

    scraped = httpx.get(f"{pushgateway}/metrics").text  # read back what Prometheus would scrape
    runs = _series(scraped, "runbook_runs_total")
    labels = {"env": "prod", "instance": "", "job": "runbook", "runbook": "web_deploy"}
    assert runs[tuple(sorted({**labels, "status": "succeeded"}.items()))] == 2
    assert runs[tuple(sorted({**labels, "status": "rolled_back"}.items()))] == 1
    rollbacks = _series(scraped, "runbook_rollbacks_total")
    assert rollbacks[tuple(sorted({**labels, "outcome": "rolled_back"}.items()))] == 1
    durations = _series(scraped, "runbook_step_duration_seconds")
    assert {dict(k)["step"] for k in durations} == {"stage", "switch"}
    sink.close()


@pytest.mark.slow
def test_pushgateway_groups_by_runbook_and_env(pushgateway: str, run_once) -> None:
    sink = PushGateway(f"pushgateway+{pushgateway}")
    prod, dev = run_once(env="prod"), run_once(env="dev")
    sink.push(_info(prod), prod)
    sink.push(_info(dev), dev)
    runs = _series(httpx.get(f"{pushgateway}/metrics").text, "runbook_runs_total")
    assert sorted(dict(k)["env"] for k in runs) == ["dev", "prod"]


def test_an_unreachable_pushgateway_is_a_metrics_error_without_credentials(run_once) -> None:
    port = _free_port()  # nothing listens there
    sink = PushGateway(f"pushgateway+http://ops:hunter22@127.0.0.1:{port}", timeout=1)
    result = run_once()
    with pytest.raises(MetricsError) as info:
        sink.push(_info(result), result)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "hunter22" not in str(info.value) and "ops" not in str(info.value)


def test_textfile_target_writes_the_collectors_format_and_counts(tmp_path: Path, run_once) -> None:
    sink = open_metrics(f"textfile://{tmp_path / 'textfile'}")
    assert isinstance(sink, TextFile)
    for fail in (False, True, False):
        result = run_once(fail=fail)
        sink.push(_info(result), result)
    files = sorted((tmp_path / "textfile").glob("*.prom"))
    assert [f.name for f in files] == ["runbook-web_deploy-prod.prom"]
    text = files[0].read_text()
    assert text.count("# TYPE runbook_runs_total counter") == 1
    runs = _series(text, "runbook_runs_total")
    base = {"env": "prod", "runbook": "web_deploy"}
    assert runs[tuple(sorted({**base, "status": "succeeded"}.items()))] == 2
    assert runs[tuple(sorted({**base, "status": "rolled_back"}.items()))] == 1
    assert not list((tmp_path / "textfile").glob("*.tmp*"))  # replaced atomically


@pytest.mark.parametrize(
    "url", ["prometheus://x", "pushgateway+ftp://h:1", "textfile://", "nonsense"]
)
def test_bad_metrics_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError, match="metrics"):
        open_metrics(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("pushgateway+http://ops:hunter22@h:notaport", "the port is not a number"),
        ("pushgateway+http://h:99999", "the port must be from 1 to 65535"),
        ("pushgateway+http://[::1:9091", "an IPv6 host needs both its brackets"),
    ],
)
def test_a_malformed_pushgateway_host_or_port_is_a_config_error(url: str, problem: str) -> None:
    """Was urllib's ValueError, a traceback from ``runbook exec``."""
    with pytest.raises(ConfigError) as info:
        open_metrics(url)
    assert str(info.value).startswith(f"metrics: pushgateway+http://***: {problem}")


def test_sample_of_sorts_labels() -> None:
    assert Sample.of("m", 1, b="2", a="1").labels == (("a", "1"), ("b", "2"))


@pytest.mark.slow
def test_exec_pushes_when_a_run_ends_and_when_it_pauses(pushgateway: str, tmp_path: Path) -> None:
    """The CLI path: ``metrics`` in [tool.runbook]; a paused run reports too."""
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").write_text(
        f'[tool.runbook]\nmetrics = "pushgateway+{pushgateway}"\n'
    )
    (tmp_path / "gated.py").write_text(
        "from runbook import step\n\n@step(approval=True)\ndef switch():\n    return 1\n"
    )
    cli = [sys.executable, "-m", "runbook", "exec", "gated.py", "--env", "prod"]
    out = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr  # paused at the gate
    runs = _series(httpx.get(f"{pushgateway}/metrics").text, "runbook_runs_total")
    assert {dict(k)["status"]: v for k, v in runs.items()} == {"paused": 1}


def test_a_dead_metrics_target_never_fails_the_run(tmp_path: Path, caplog) -> None:
    from runbook import Runner, load

    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "ok.py").write_text("from runbook import step\n@step\ndef a():\n    return 1\n")
    port = _free_port()
    with Runner(metrics=f"pushgateway+http://127.0.0.1:{port}", entry_points=False) as runner:
        result = runner.run(load(tmp_path / "ok.py"))
    assert result.status == "succeeded"
    assert f"metrics: pushgateway 127.0.0.1:{port}: ConnectError" in caplog.text


def test_a_runner_with_a_textfile_target_writes_at_run_end(tmp_path: Path) -> None:
    from runbook import Runner, load

    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "ok.py").write_text("from runbook import step\n@step\ndef a():\n    return 1\n")
    with Runner(metrics=f"textfile://{tmp_path / 'tf'}", entry_points=False, env="dev") as runner:
        runner.run(load(tmp_path / "ok.py"))
        runner.run(load(tmp_path / "ok.py"))
    text = (tmp_path / "tf" / "runbook-ok-dev.prom").read_text()
    assert 'runbook_runs_total{env="dev",runbook="ok",status="succeeded"} 2' in text
