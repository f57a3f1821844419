"""Project configuration: discovery, defaults, URL anchoring, envs, errors, and the actor chain."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runbook import config as config_mod
from runbook.config import Config, SinkConfig, load_config, resolve_actor, resolve_url
from runbook.errors import ConfigError
from runbook.plugins import Plugins
from runbook.protection import LEVELS, Protection


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def load(start: Path, **kwargs) -> Config:
    kwargs.setdefault("environ", {})
    return load_config(start, **kwargs)


def error(start: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(start, **kwargs)
    return str(info.value)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with a runbooks/ subfolder, nothing configured yet."""
    (tmp_path / "proj" / "runbooks" / "deep").mkdir(parents=True)
    return tmp_path / "proj"


# -- discovery -----------------------------------------------------------------------------------


def test_no_file_gives_defaults_rooted_at_start(project: Path) -> None:
    start = project / "runbooks"
    cfg = load(start)
    assert cfg.path is None and cfg.root == start
    assert cfg.store == f"sqlite:///{start}/.runbook/runbook.db"
    assert cfg.audit == (SinkConfig(f"jsonl://{start}/.runbook/audit.jsonl"),)
    assert cfg.lock == f"file://{start}/.runbook/locks"
    assert cfg.router == f"file://{start}/.runbook/router.json"
    assert (cfg.lock_timeout, cfg.lease, cfg.keep_lock_when_paused) == (0.0, 30.0, True)
    assert (cfg.default_env, cfg.plugins, cfg.envs, cfg.notify, cfg.templates) == (
        "dev",
        (),
        {},
        (),
        {},
    )


def test_runbook_toml_found_upwards(project: Path) -> None:
    cfg_file = write(project / "runbook.toml", 'default_env = "staging"\n')
    cfg = load(project / "runbooks" / "deep")
    assert (cfg.path, cfg.root, cfg.default_env) == (cfg_file, project, "staging")
    assert cfg.store == f"sqlite:///{project}/.runbook/runbook.db"


def test_runbook_toml_may_use_a_tool_runbook_table(project: Path) -> None:
    write(project / "runbook.toml", '[tool.runbook]\ndefault_env = "qa"\n')
    assert load(project).default_env == "qa"


def test_pyproject_with_tool_runbook_is_found(project: Path) -> None:
    write(
        project / "pyproject.toml",
        """
        [project]
        name = "ops"
        [tool.runbook]
        lease = 10
        [tool.black]
        line-length = 100
    """,
    )
    cfg = load(project / "runbooks")
    assert (cfg.path, cfg.lease) == (project / "pyproject.toml", 10.0)


def test_pyproject_without_the_table_is_skipped(project: Path) -> None:
    write(project / "runbook.toml", "lease = 5\n")
    write(project / "runbooks" / "pyproject.toml", '[project]\nname = "runbook-ish"\n')
    cfg = load(project / "runbooks" / "deep")
    assert (cfg.path, cfg.lease) == (project / "runbook.toml", 5.0)


def test_unrelated_broken_pyproject_is_ignored(project: Path) -> None:
    write(project / "runbooks" / "pyproject.toml", "[project\nname = 'x'\n")
    assert load(project / "runbooks").path is None


def test_runbook_toml_wins_over_pyproject_in_one_folder(project: Path) -> None:
    write(project / "pyproject.toml", "[tool.runbook]\nlease = 1\n")
    write(project / "runbook.toml", "lease = 2\n")
    assert load(project).lease == 2.0


def test_nearest_file_wins(project: Path) -> None:
    write(project / "runbook.toml", "lease = 2\n")
    write(project / "runbooks" / "pyproject.toml", "[tool.runbook]\nlease = 3\n")
    cfg = load(project / "runbooks" / "deep")
    assert (cfg.lease, cfg.root) == (3.0, project / "runbooks")


def test_start_may_be_the_runbook_file_itself(project: Path) -> None:
    write(project / "runbook.toml", "lease = 2\n")
    runbook = write(project / "runbooks" / "deploy.py", "")
    assert load(runbook).root == project


def test_explicit_file_skips_the_search(project: Path, tmp_path: Path) -> None:
    write(project / "runbook.toml", "lease = 2\n")
    other = write(tmp_path / "elsewhere" / "ci.toml", "lease = 7\n")
    cfg = load(project, explicit=other)
    assert (cfg.path, cfg.root, cfg.lease) == (other, other.parent, 7.0)


def test_explicit_file_must_exist_and_have_the_table(project: Path) -> None:
    assert "configuration file not found" in error(project, explicit=project / "nope.toml")
    pyproject = write(project / "pyproject.toml", '[project]\nname = "x"\n')
    message = error(project, explicit=pyproject)
    assert str(pyproject) in message and "no [tool.runbook] table" in message


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///.runbook/runbook.db", "sqlite:////root/.runbook/runbook.db"),
        ("sqlite:////abs/run.db", "sqlite:////abs/run.db"),
        ("sqlite:///./a/../b.db?timeout=3", "sqlite:////root/b.db?timeout=3"),
        ("sqlite://", "sqlite://"),
        ("jsonl://.runbook/audit.jsonl", "jsonl:///root/.runbook/audit.jsonl"),
        ("jsonl:///var/log/audit.jsonl", "jsonl:///var/log/audit.jsonl"),
        ("file://.runbook/locks", "file:///root/.runbook/locks"),
        ("file://router.json", "file:///root/router.json"),
        ("logging://runbook", "logging://runbook"),
        ("postgresql://db.internal/ops", "postgresql://db.internal/ops"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_resolve_url(url: str, expected: str) -> None:
    assert resolve_url(url, Path("/root")) == expected


def test_resolve_url_expands_home(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/alice")
    assert resolve_url("jsonl://~/audit.jsonl", Path("/root")) == "jsonl:///home/alice/audit.jsonl"


def test_relative_urls_resolve_against_the_root_not_the_cwd(
    project: Path, tmp_path: Path, monkeypatch
) -> None:
    write(
        project / "runbook.toml",
        """
        store = "sqlite:///state/run.db"
        audit = ["jsonl://audit.jsonl", { url = "sqlite://", best_effort = true }]
        lock = "file://locks"
        router = "file://router.json"
    """,
    )
    monkeypatch.chdir(tmp_path)
    cfg = load(project / "runbooks")
    assert cfg.store == f"sqlite:///{project}/state/run.db"
    assert cfg.audit == (
        SinkConfig(f"jsonl://{project}/audit.jsonl"),
        SinkConfig("sqlite://", best_effort=True),
    )
    assert cfg.lock == f"file://{project}/locks"
    assert cfg.router == f"file://{project}/router.json"


def test_runbook_store_env_overrides_relative_to_cwd(
    project: Path, tmp_path: Path, monkeypatch
) -> None:
    write(project / "runbook.toml", 'store = "sqlite:///configured.db"\n')
    monkeypatch.chdir(tmp_path)
    environ = {"RUNBOOK_STORE": "sqlite:///from-env.db"}
    assert load(project, environ=environ).store == f"sqlite:///{tmp_path}/from-env.db"
    environ = {"RUNBOOK_STORE": "postgresql://db/ops"}
    assert load(project, environ=environ).store == "postgresql://db/ops"
    assert "RUNBOOK_STORE" in error(project, environ={"RUNBOOK_STORE": "runbook.db"})


# -- environments --------------------------------------------------------------------------------


def test_env_sections_and_protection_levels(project: Path) -> None:
    write(
        project / "pyproject.toml",
        """
        [tool.runbook.env.dev]
        protection = "none"
        [tool.runbook.env.prod]
        protection = "strict"
        params = { replicas = 6, region = "eu" }
        approvers = ["alice", "bob"]
        [tool.runbook.env.qa]
        approvers = ["carol"]
    """,
    )
    cfg = load(project)
    assert cfg.env("dev").protection == Protection.for_level("none")
    prod = cfg.env("prod")
    assert prod.protection == Protection.for_level("strict")
    assert (prod.name, prod.params, prod.approvers) == (
        "prod",
        {"replicas": 6, "region": "eu"},
        ("alice", "bob"),
    )
    qa = cfg.env("qa")  # a section without protection is standard
    assert (qa.protection, qa.approvers) == (Protection.for_level("standard"), ("carol",))


def test_protection_flags_override_the_level_one_by_one(project: Path) -> None:
    write(
        project / "runbook.toml",
        """
        [env.prod]
        protection = "strict"
        allow_yes = true
        [env.sandbox]
        protection = "none"
        require_approval = true
        require_rollbacks = true
        allow_force = false
    """,
    )
    cfg = load(project)
    assert cfg.env("prod").protection == Protection.for_level("strict", allow_yes=True)
    sandbox = cfg.env("sandbox").protection
    assert (sandbox.level, sandbox.require_approval, sandbox.allow_yes) == ("none", True, True)
    assert (sandbox.require_rollbacks, sandbox.allow_force) == (True, False)


def test_unknown_env_and_default_env(project: Path) -> None:
    assert load(project).env(None).name == "dev"
    write(project / "runbook.toml", 'default_env = "staging"\n[env.staging]\nprotection = "none"\n')
    cfg = load(project)
    assert cfg.env(None).name == "staging" and cfg.env(None).protection.level == "none"
    unknown = cfg.env("prod")  # safe by default
    assert (unknown.name, unknown.protection, unknown.params, unknown.approvers) == (
        "prod",
        Protection.for_level("standard"),
        {},
        (),
    )


# -- notify, templates, plugins ------------------------------------------------------------------


def test_notify_templates_and_plugins_are_kept(project: Path) -> None:
    write(
        project / "runbook.toml",
        """
        plugins = ["my_company.runbook_plugin"]
        notify = [
          { to = "slack://hooks.slack.com/services/T0/B0/XX", on = ["run_failed"], env = ["prod"] },
          { to = "console://", severity = "error" },
        ]
        [templates]
        run_failed = "{runbook} failed in {env}"
    """,
    )
    cfg = load(project)
    assert cfg.plugins == ("my_company.runbook_plugin",)
    assert cfg.notify[0] == {
        "to": "slack://hooks.slack.com/services/T0/B0/XX",
        "on": ["run_failed"],
        "env": ["prod"],
    }
    assert cfg.notify[1] == {"to": "console://", "severity": "error"}
    assert cfg.templates == {"run_failed": "{runbook} failed in {env}"}
    assert "T0/B0/XX" not in repr(cfg)


def test_plugin_keys_are_allowed_with_extra_keys(project: Path) -> None:
    write(project / "runbook.toml", '[slack]\ndefault_channel = "#ops"\n')
    assert "unknown key slack" in error(project)
    cfg = load(project, extra_keys=["slack"])
    assert cfg.extra == {"slack": {"default_channel": "#ops"}}


def test_the_hint_for_an_empty_audit_names_a_sink_that_works(tmp_path: Path) -> None:
    """The hint said "use logging://runbook to just log events": from the CLI that logger has
    no handler, so the sink refused the first event and the run stopped with an AuditError.
    The URL the hint names now is taken from the message, configured, and a run succeeds."""
    write(tmp_path / "runbook.toml", "audit = []\n")
    message = error(tmp_path)
    assert message.startswith(f"{tmp_path / 'runbook.toml'}: audit: at least one audit sink")
    suggested = re.search(r"\w+://[^\s\"\])]*", message)
    assert suggested, message
    write(tmp_path / "runbook.toml", f'audit = ["{suggested.group(0)}"]\n')
    write(tmp_path / "hello.py", "from runbook import step\n\n@step\ndef hello():\n    return 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    done = subprocess.run(
        [sys.executable, "-m", "runbook", "exec", "hello.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "RUNBOOK_ACTOR": "tester"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (sink,) = load(tmp_path).audit
    trail = Plugins().open("audit", sink.url)
    assert [e.kind for e in trail.events()][-1] == "run_finished"


# -- errors --------------------------------------------------------------------------------------


def test_unknown_key_names_file_dotted_key_and_suggestion(project: Path) -> None:
    cfg_file = write(project / "pyproject.toml", '[tool.runbook.env.prod]\nprotecton = "strict"\n')
    message = error(project)
    assert message.startswith(f"{cfg_file}: unknown key tool.runbook.env.prod.protecton")
    assert "did you mean 'protection'?" in message
    write(project / "pyproject.toml", '[tool.runbook]\nstor = "sqlite:///x.db"\n')
    assert "unknown key tool.runbook.stor (did you mean 'store'?)" in error(project)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('lease = "5"', "lease: expected a number of seconds, got a string"),
        ("lease = true", "lease: expected a number of seconds, got a boolean"),
        ("lease = 0", "lease: must be greater than 0"),
        ("lock_timeout = -1", "lock_timeout: must be 0 or more"),
        ('keep_lock_when_paused = "yes"', "keep_lock_when_paused: expected a boolean"),
        ("default_env = 1", "default_env: expected a string, got an integer"),
        ('plugins = "a"', "plugins: expected an array of strings, got a string"),
        ("store = 5", "store: expected a URL string, got an integer"),
        ('audit = "jsonl://a"', "audit: expected an array of sink URLs"),
        ("audit = []", "audit: at least one audit sink is required"),
        ("audit = [{ best_effort = true }]", "audit[0]: missing required key url"),
        ('audit = [{ url = "jsonl://a", best_effort = 1 }]', "audit[0].best_effort: expected a"),
        (
            'audit = [{ url = "jsonl://a", besteffort = true }]',
            "unknown key audit[0].besteffort (did you mean 'best_effort'?)",
        ),
        ("env = 3", "env: expected a table"),
        ("[env.prod]\nparams = 3", "env.prod.params: expected a table, got an integer"),
        ('[env.prod]\napprovers = ["a", 2]', "env.prod.approvers[1]: expected a string"),
        ('[env.prod]\nallow_yes = "no"', "env.prod.allow_yes: expected a boolean"),
        ("[env.prod]\nprotection = 1", "env.prod.protection: expected one of none, standard"),
        (
            '[env.prod]\nprotection = "strikt"',
            "env.prod.protection: must be one of none, standard, strict, got 'strikt' "
            "(did you mean 'strict'?)",
        ),
        ('[env."eu.prod"]\nprotecton = "strict"', 'unknown key env."eu.prod".protecton'),
        (
            'notify = [{ to = "console://", severty = "info" }]',
            "unknown key notify[0].severty (did you mean 'severity'?)",
        ),
        ('notify = [{ to = "console://", on = ["nope"] }]', "notify[0] (console://"),
        ('notify = [{ on = ["run_failed"] }]', "notify[0]: 'to' is required"),
        ('[templates]\nrun_faild = "x"', "unknown key templates.run_faild (did you mean"),
        ("[templates]\nrun_failed = 3", "templates: notification template run_failed must be"),
    ],
)
def test_wrong_values_name_the_file_and_key(project: Path, body: str, expected: str) -> None:
    cfg_file = write(project / "runbook.toml", body + "\n")
    message = error(project)
    assert message.startswith(f"{cfg_file}: ")
    assert expected in message


def test_type_errors_never_echo_the_value(project: Path) -> None:
    write(project / "runbook.toml", 'lock = "hunter2-s3cret"\n')
    message = error(project)
    assert "lock: expected a URL" in message and "s3cret" not in message


def test_toml_syntax_error_names_file_and_line(project: Path) -> None:
    cfg_file = write(project / "runbook.toml", 'lease = 5\nstore = = "x"\n')
    message = error(project)
    assert message.startswith(f"{cfg_file}:2: invalid TOML")


def test_broken_pyproject_that_mentions_runbook_is_reported(project: Path) -> None:
    cfg_file = write(project / "pyproject.toml", "[tool.runbook]\nlease = \n")
    assert error(project).startswith(f"{cfg_file}:2: invalid TOML")


def test_runbook_toml_cannot_mix_top_level_keys_and_tool_table(project: Path) -> None:
    write(project / "runbook.toml", "lease = 1\n[tool.runbook]\nlease = 2\n")
    assert "either top-level keys or a [tool.runbook] table" in error(project)
    write(project / "runbook.toml", "[tool.runbook]\nlease = 2\n[tool.black]\nx = 1\n")
    assert "unknown key tool.black" in error(project)


# -- actor ---------------------------------------------------------------------------------------


@pytest.fixture
def no_git_config(tmp_path: Path, monkeypatch) -> None:
    """Only a repo's own config counts: not the machine's global or system git config."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setattr(getpass, "getuser", lambda: "os-user")


def git_repo(path: Path, email: str) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "config", "user.email", email], check=True)
    return path


def test_explicit_actor_wins(no_git_config) -> None:
    assert resolve_actor("carol", environ={"RUNBOOK_ACTOR": "dave"}) == "carol"


def test_runbook_actor_env_comes_next(tmp_path: Path, no_git_config) -> None:
    assert resolve_actor(None, environ={"RUNBOOK_ACTOR": " dave "}, cwd=tmp_path) == "dave"
    assert resolve_actor("  ", environ={"RUNBOOK_ACTOR": "dave"}, cwd=tmp_path) == "dave"


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_user_email_comes_next(tmp_path: Path, no_git_config) -> None:
    repo = git_repo(tmp_path / "repo", "erin@example.com")
    assert resolve_actor(None, environ={}, cwd=repo) == "erin@example.com"
    assert resolve_actor(None, environ={"RUNBOOK_ACTOR": "dave"}, cwd=repo) == "dave"


def test_os_user_is_the_last_resort(tmp_path: Path, no_git_config) -> None:
    assert resolve_actor(None, environ={}, cwd=tmp_path) == "os-user"


def test_hanging_git_is_ignored(tmp_path: Path, no_git_config, monkeypatch) -> None:
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(subprocess, "run", hang)
    assert resolve_actor(None, environ={}, cwd=tmp_path) == "os-user"


def test_git_not_on_path_is_ignored(tmp_path: Path, no_git_config, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert resolve_actor(None, environ={}, cwd=tmp_path) == "os-user"


def test_no_os_user_still_names_someone(tmp_path: Path, no_git_config, monkeypatch) -> None:
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert resolve_actor(None, environ={}, cwd=tmp_path).startswith("uid-")


# -- docs/configuration.md stays true to the code ------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
DOC_TEXT = DOC.read_text(encoding="utf-8")
# A default is a TOML value in backticks, or "none" for a key that is unset unless given.
KEY_ROW = re.compile(r"^\| `(\w+)` \| ([^|]+?) \| (?:`([^`]*)`|(none)) \|", re.M)


def test_docs_list_every_key() -> None:
    documented = {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", DOC_TEXT, re.M)}
    assert set(config_mod.TOP_KEYS) - documented == set()
    assert set(config_mod.ENV_KEYS) - documented == set()


def test_docs_defaults_are_the_code_defaults(tmp_path: Path) -> None:
    rows = {key: (kind, default, unset) for key, kind, default, unset in KEY_ROW.findall(DOC_TEXT)}
    assert set(rows) == set(config_mod.TOP_KEYS)
    lines = [
        f"{k} = {json.dumps(d) if kind == 'URL' else d}"
        for k, (kind, d, unset) in rows.items()
        if not unset
    ]
    documented = load(write(tmp_path / "a" / "runbook.toml", "\n".join(lines)).parent)
    defaults = load(Path(tmp_path / "b"))
    for name in (
        "store",
        "audit",
        "lock",
        "lock_timeout",
        "lease",
        "keep_lock_when_paused",
        "paused_lease",
        "router",
        "default_env",
        "plugins",
        "envs",
        "notify",
        "templates",
        "audit_key",
    ):
        left = str(getattr(documented, name)).replace(str(tmp_path / "a"), "ROOT")
        right = str(getattr(defaults, name)).replace(str(tmp_path / "b"), "ROOT")
        assert left == right, name


def test_docs_protection_table_matches_the_levels() -> None:
    rows = re.findall(
        r"^\| (none|standard|strict) \| (\w+) \| (\w+) \| (\w+) \| (\w+) \|$", DOC_TEXT, re.M
    )
    assert [r[0] for r in rows] == list(LEVELS)
    for level, *flags in rows:
        protection = Protection.for_level(level)
        assert [str(getattr(protection, f)).lower() for f in config_mod.PROTECTION_FLAGS] == flags


def test_docs_example_loads_and_python_block_runs(tmp_path: Path, monkeypatch) -> None:
    toml = re.search(r"```toml\n# pyproject.toml\n(.*?)```", DOC_TEXT, re.S).group(1)
    write(tmp_path / "pyproject.toml", toml)
    (tmp_path / "runbooks").mkdir()
    monkeypatch.chdir(tmp_path)
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", DOC_TEXT, re.S)):
        exec(compile(block, f"{DOC}:python{number}", "exec"), {})
    cfg = load(tmp_path / "runbooks")
    assert cfg.audit[1] == SinkConfig("logging://runbook.audit", best_effort=True)
    assert cfg.env("prod").protection.allow_force is True


def test_without_a_config_file_the_root_is_the_project_folder(tmp_path: Path) -> None:
    """exec (searching from the runbook's folder) and runs (from the top) share one store."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "runbooks").mkdir()
    from_runbook = load_config(tmp_path / "runbooks")
    from_top = load_config(tmp_path)
    assert from_runbook.root == from_top.root == tmp_path
    assert from_runbook.store == from_top.store
    assert str(tmp_path / ".runbook" / "runbook.db") in from_runbook.store
