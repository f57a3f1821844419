"""runbook.load: import by path, collect everything, and report every definition error."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from runbook import DefinitionError, load


def test_load_by_path_collects_everything(write_runbook):
    path = write_runbook('''
        """Deploy the thing."""
        from runbook import param, probe, resource, rollback, step

        version = param("version", help="release")
        replicas = param("replicas", type=int, default=2)
        lock = "deploy-{env}"

        @resource
        def registry():
            return "registry"

        @probe
        def live():
            return "blue"

        @step(reversible=True)
        def stage(live, registry, version=None):
            return {}

        @rollback(stage)
        def unstage(stage):
            pass

        @step(after=[stage], name="announce")
        def tell(params):
            pass
    ''')
    rb = load(path)
    assert rb.path == path and rb.name == "rb" and rb.doc == "Deploy the thing."
    assert list(rb.steps) == ["live", "stage", "announce"]
    assert rb.steps["live"].kind == "probe"
    assert (
        rb.steps["stage"].deps == ("live",)
        and rb.steps["stage"].rollback.func.__name__ == "unstage"
    )
    assert rb.steps["stage"].reversible and not rb.steps["announce"].reversible
    assert rb.steps["announce"].after == ("stage",) and rb.steps["announce"].func.__name__ == "tell"
    assert set(rb.params) == {"version", "replicas"} and rb.params["replicas"].default == 2
    assert "registry" in rb.resources and rb.resources["registry"].origin == str(path)
    assert rb.lock == "deploy-{env}"
    assert len(rb.sha256) == 64
    assert rb.levels() == [["live"], ["stage"], ["announce"]]


def test_module_is_not_put_on_sys_modules_by_its_plain_name_and_sibling_import_works(
    write_runbook, tmp_path
):
    helper = f"helper_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{helper}.py").write_text("TARGET = 'green'\n")
    path = write_runbook(
        f"""
        from runbook import step
        from {helper} import TARGET

        @step
        def plan():
            return TARGET
    """,
        name="sibling",
    )
    assert "sibling" not in sys.modules
    rb = load(path)
    assert rb.module.TARGET == "green"
    assert rb.module.__name__ != "sibling"


def test_missing_file_is_a_definition_error(tmp_path):
    with pytest.raises(DefinitionError, match="no such runbook file"):
        load(tmp_path / "nope.py")


def test_strategy_group_expands_into_named_steps_with_an_alias(write_runbook):
    path = write_runbook("""
        from runbook import step
        from runbook.groups import GroupStep, StepGroup
        from runbook.markers import StepOptions

        @step
        def stage():
            return "v1"

        def shift(stage):
            return {"weight": 5, "of": stage}

        def bake(clock):
            return None

        release = StepGroup(
            strategy="handmade", service="web", after=("stage",),
            steps=(GroupStep("shift-5", shift, StepOptions(reversible=True),
                             rollback=lambda output: None),
                   GroupStep("bake-5", bake, after=("shift-5",))))

        @step
        def verify(release):
            return release
    """)
    rb = load(path)
    assert list(rb.steps) == ["stage", "release.shift-5", "release.bake-5", "verify"]
    assert rb.steps["release.shift-5"].after == ()  # "stage" is already a data dependency
    assert rb.steps["release.shift-5"].deps == ("stage",)
    assert rb.steps["release.bake-5"].after == ("release.shift-5",)
    assert rb.steps["release.shift-5"].rollback is not None
    assert rb.steps["verify"].deps == ("release.bake-5",)
    assert rb.aliases == {"release": "release.bake-5"}
    assert rb.steps["release.shift-5"].group == "release"


def test_group_step_after_an_unknown_local_step(write_runbook):
    path = write_runbook("""
        from runbook.groups import GroupStep, StepGroup
        release = StepGroup("x", "web", (GroupStep("a", lambda: None, after=("zzz",)),),
                            file="here.py", line=7)
    """)
    with pytest.raises(
        DefinitionError,
        match=r"here.py:7: group release: step a is after "
        r"unknown \['zzz'\]",
    ):
        load(path)


# -- runbookconf.py --------------------------------------------------------------------------


def test_runbookconf_resources_found_upwards_nearest_wins_stop_at_root(tmp_path):
    root = tmp_path / "proj"
    (root / "ops" / "web").mkdir(parents=True)
    (tmp_path / "runbookconf.py").write_text(  # above the project root: never read
        "from runbook import resource\n@resource\ndef outside():\n    return 'no'\n"
    )
    (root / "pyproject.toml").touch()
    (root / "runbookconf.py").write_text(
        "from runbook import resource\n"
        "@resource\ndef region():\n    return 'eu'\n"
        "@resource\ndef cluster():\n    return 'root'\n"
    )
    (root / "ops" / "runbookconf.py").write_text(
        "from runbook import resource\n@resource\ndef cluster():\n    return 'ops'\n"
    )
    path = root / "ops" / "web" / "rb.py"
    path.write_text(
        "from runbook import step\n@step\ndef s(region, cluster):\n    return [region, cluster]\n"
    )
    rb = load(path)
    assert rb.resources["cluster"].origin == str(root / "ops" / "runbookconf.py")
    assert rb.resources["region"].origin == str(root / "runbookconf.py")
    assert "outside" not in rb.resources
    assert len(rb.conftests) == 2

    bad = root / "ops" / "web" / "rb2.py"
    bad.write_text("from runbook import step\n@step\ndef s(outside):\n    pass\n")
    with pytest.raises(DefinitionError, match="'outside' is not a step, resource or built-in"):
        load(bad)


def test_runbook_resource_overrides_runbookconf(write_runbook, tmp_path):
    (tmp_path / "runbookconf.py").write_text(
        "from runbook import resource\n@resource\ndef db():\n    return 'conf'\n"
    )
    rb = load(
        write_runbook("""
        from runbook import resource, step
        @resource
        def db():
            return "mine"
        @step
        def s(db):
            return db
    """)
    )
    assert rb.resources["db"].origin.endswith("rb.py")


# -- definition errors --------------------------------------------------------------------------


def _error(write_runbook, source: str) -> DefinitionError:
    path = write_runbook(source)
    with pytest.raises(DefinitionError) as info:
        load(path)
    assert info.value.file == str(path), "every definition error names the runbook file"
    return info.value


def test_cycle_shows_the_path(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step
        def a(c):
            pass
        @step
        def b(a):
            pass
        @step
        def c(b):
            pass
    """,
    )
    assert "dependency cycle:" in str(err)
    cycle = str(err).split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"} and len(cycle) == 4
    assert err.line is not None


def test_cycle_through_after(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step(after=["b"])
        def a():
            pass
        @step
        def b(a):
            pass
    """,
    )
    assert "a -> b -> a" in str(err) or "b -> a -> b" in str(err)


def test_self_dependency(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step
        def a(a):
            pass
    """,
    )
    assert "depends on itself" in str(err)


def test_unknown_injected_name_suggests_the_close_one(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step
        def plan():
            pass
        @step
        def stage(plann, shell):
            pass
    """,
    )
    assert "step 'stage': parameter 'plann' is not a step, resource or built-in" in str(err)
    assert "did you mean 'plan'?" in str(err)
    assert err.line == 6  # the decorator line of ``stage``


def test_unknown_name_with_a_default_is_fine(write_runbook):
    rb = load(
        write_runbook("""
        from runbook import step
        @step
        def stage(flavour="vanilla"):
            return flavour
    """)
    )
    assert rb.steps["stage"].args[0].source == "default"


def test_unknown_name_in_when_and_rollback(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step(when=lambda nope: True)
        def a():
            pass
    """,
    )
    assert "when= of step 'a': parameter 'nope'" in str(err)
    err = _error(
        write_runbook,
        """
        from runbook import rollback, step
        @step
        def a():
            pass
        @rollback(a)
        def undo(a, nope):
            pass
    """,
    )
    assert "rollback 'undo': parameter 'nope'" in str(err)


def test_duplicate_step_name(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step
        def a():
            pass
        @step(name="a")
        def b():
            pass
    """,
    )
    assert "duplicate step name 'a'" in str(err)


def test_after_unknown_step(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step(after=["ghost"])
        def a():
            pass
    """,
    )
    assert "after= names unknown step 'ghost'" in str(err)


def test_rollback_for_a_missing_step(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import rollback, step
        @rollback("stage")
        def unstage():
            pass
    """,
    )
    assert "rollback 'unstage' undoes unknown step 'stage'" in str(err)
    assert err.line == 3


def test_two_rollbacks_for_one_step(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import rollback, step
        @step
        def stage():
            pass
        @rollback(stage)
        def one():
            pass
        @rollback("stage")
        def two():
            pass
    """,
    )
    assert "step 'stage' has two rollbacks" in str(err)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("retries=-1", "retries must be an integer >= 0"),
        ("retries=1.5", "retries must be an integer >= 0"),
        ("timeout=0", "timeout must be seconds > 0"),
        ("timeout=-5", "timeout must be seconds > 0"),
        ("backoff=-1", "backoff must be seconds >= 0"),
        ("when=True", "when= must be callable"),
        ("lock=3", "lock must be a name template"),
        ('reversible="no"', "reversible must be True or False, got 'no'"),
        ('idempotent="false"', "idempotent must be True or False, got 'false'"),
        ("required=0", "required must be True or False, got 0"),
        ("retries=True", "retries must be an integer >= 0"),
        ("backoff=float('nan'), retries=1", "backoff must be seconds >= 0"),
        ("backoff_max=-1", "backoff_max must be seconds >= 0"),
        ("timeout=float('nan')", "timeout must be seconds > 0"),
        ('lock=" "', "lock must be a name template"),
    ],
)
def test_bad_options(write_runbook, options, message):
    err = _error(
        write_runbook,
        f"""
        from runbook import step
        @step({options})
        def a():
            pass
    """,
    )
    assert f"step 'a': {message}" in str(err)
    assert err.line == 3


def test_star_args_are_refused(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step
        @step
        def a(*args, **kwargs):
            pass
    """,
    )
    assert "parameter 'args' must be a plain named parameter" in str(err)


@pytest.mark.parametrize("option", ["approval=True", "reversible=True"])
def test_probe_cannot_be_gated_or_reversible(write_runbook, option):
    err = _error(
        write_runbook,
        f"""
        from runbook import probe
        @probe({option})
        def live():
            pass
    """,
    )
    assert "probe 'live' is read-only" in str(err)


def test_module_level_lock_must_be_a_string(write_runbook):
    err = _error(
        write_runbook,
        """
        lock = 5
    """,
    )
    assert "module-level lock must be a string template" in str(err)


def test_import_error_names_file_and_line(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step

        import no_such_module_for_runbook_tests
    """,
    )
    assert "import failed: ModuleNotFoundError" in str(err)
    assert err.line == 4 and f"{err.file}:4:" in str(err)


def test_exception_at_import_names_the_line(write_runbook):
    err = _error(
        write_runbook,
        """
        X = 1
        Y = X / 0
    """,
    )
    assert "ZeroDivisionError" in str(err) and err.line == 3


def test_syntax_error_names_file_and_line(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step

        @step
        def a(:
            pass
    """,
    )
    assert "syntax error" in str(err) and err.line == 5


def test_unknown_decorator_option_inside_a_runbook_points_at_it(write_runbook):
    err = _error(
        write_runbook,
        """
        from runbook import step

        @step(retrys=2)
        def a():
            pass
    """,
    )
    assert "unknown option(s) retrys" in str(err)
    assert err.line == 4


def test_definition_error_in_runbookconf_names_that_file(write_runbook, tmp_path):
    conf = tmp_path / "runbookconf.py"
    conf.write_text("import definitely_missing_module_xyz\n")
    path = write_runbook("from runbook import step\n")
    with pytest.raises(DefinitionError) as info:
        load(path)
    assert info.value.file == str(conf) and info.value.line == 1
    assert Path(info.value.file).name == "runbookconf.py"


def test_after_accepts_a_strategy_group_object(write_runbook):
    path = write_runbook("""
        from runbook import step
        from runbook.groups import GroupStep, StepGroup

        def noop():
            return None

        release = StepGroup("custom", "web", (GroupStep("one", noop), GroupStep("two", noop,
                            after=("one",))))

        @step(after=[release])
        def announce():
            return "done"
    """)
    rb = load(path)
    assert rb.steps["announce"].after == ("release.two",)
    assert list(rb.steps) == ["release.one", "release.two", "announce"]


def test_a_group_step_gets_a_siblings_output_by_its_local_name(write_runbook):
    path = write_runbook("""
        from runbook import step
        from runbook.groups import GroupStep, StepGroup

        def pick():
            return {"color": "green"}

        def use(pick, shift_5):
            return [pick["color"], shift_5]

        def shift():
            return 5

        @step
        def pick_unrelated():  # a runbook step; the group's own "pick" wins inside the group
            return "outer"

        release = StepGroup("custom", "web", (
            GroupStep("pick", pick), GroupStep("shift-5", shift, after=("pick",)),
            GroupStep("use", use, after=("shift-5",))))
    """)
    rb = load(path)
    assert rb.steps["release.use"].deps == ("release.pick", "release.shift-5")
    from runbook import Runner

    result = Runner(actor="t").run(rb)
    assert result.steps["release.use"].output == ["green", 5]


@pytest.mark.parametrize(
    ("body", "line", "strategy"),
    [
        ('rolling(["a", "b"], deploy=lambda host: None)', 3, "rolling"),
        ('releases = [canary("web", weights=[50, 100], approval=False)]', 3, "canary"),
        (
            'blue = blue_green("web", deploy=lambda color: None, health=lambda color: True)\n'
            'blue_green("api", deploy=lambda color: None, health=lambda color: True)',
            4,
            "blue_green",
        ),
    ],
)
def test_a_strategy_call_no_module_name_holds_is_a_definition_error_at_its_line(
    write_runbook, body: str, line: int, strategy: str
) -> None:
    path = write_runbook(
        "from runbook.strategies import blue_green, canary, rolling\n\n" + body + "\n"
    )
    with pytest.raises(DefinitionError) as refused:
        load(path)
    assert refused.value.line == line
    assert f"{strategy}() makes its steps only when assigned to a module-level name" in str(
        refused.value
    )


def test_an_assigned_strategy_and_one_built_by_a_function_at_import_are_collected(
    write_runbook,
) -> None:
    path = write_runbook(
        "from runbook.strategies import rolling\n\n"
        "def make(service):\n"
        '    return rolling(["a", "b"], deploy=lambda host: None, service=service)\n\n'
        'web = make("web")\n'
        'api = rolling(["c"], deploy=lambda host: None, service="api")\n'
    )
    steps = load(path).steps
    assert "web.deploy[a]" in steps and "api.deploy[c]" in steps


@pytest.mark.parametrize(
    ("source", "line", "name"),
    [
        ("class Deploy:\n    @step\n    def stage(self):\n        pass\n", 4, "stage"),
        ("def make():\n    @step\n    def inner():\n        pass\n\nmake()\n", 4, "inner"),
        ("@step\ndef a():\n    return 1\n\n@step\ndef a():\n    return 2\n", 3, "a"),
    ],
)
def test_a_step_no_module_level_name_holds_is_a_definition_error_at_its_line(
    write_runbook, source: str, line: int, name: str
) -> None:
    path = write_runbook("from runbook import step\n\n" + source)
    with pytest.raises(DefinitionError) as refused:
        load(path)
    assert refused.value.line == line
    assert f"step {name!r} is not held by a module-level name" in str(refused.value)


def test_steps_a_factory_makes_and_the_module_assigns_are_collected(write_runbook) -> None:
    path = write_runbook(
        "from runbook import step\n\n"
        "def make(name):\n"
        "    @step(name=name)\n"
        "    def inner():\n"
        "        return name\n"
        "    return inner\n\n"
        'a = make("a")\n'
        'b = make("b")\n'
    )
    assert set(load(path).steps) == {"a", "b"}


def test_what_was_made_elsewhere_is_not_checked_here() -> None:
    from runbook.made import Made, lost

    made = [("step", "x", "/other.py", 3), ("step", "y", "/rb.py", 5)]
    assert lost(made, "/rb.py", [("y", "/rb.py", 5)], []) is None
    assert lost(made, "/rb.py", [], []) == Made("step", "y", "/rb.py", 5)


def test_steps_a_loop_makes_under_one_name_are_refused_naming_the_one_lost(
    write_runbook,
) -> None:
    path = write_runbook(
        "from runbook import step\n\n"
        'for region in ("eu", "us"):\n'
        '    @step(name=f"deploy-{region}")\n'
        "    def deploy():\n"
        "        pass\n"
    )
    with pytest.raises(DefinitionError) as refused:
        load(path)
    assert "step 'deploy-eu' is not held by a module-level name" in str(refused.value)
    assert "one of several made in a loop under one name" in str(refused.value)
    held = write_runbook(
        "from runbook import step\n\n"
        'for region in ("eu", "us"):\n'
        '    @step(name=f"deploy-{region}")\n'
        "    def deploy():\n"
        "        pass\n"
        '    globals()[f"deploy_{region}"] = deploy\n',
        name="held",
    )
    assert set(load(held).steps) == {"deploy-eu", "deploy-us"}


def test_an_async_when_is_refused_at_its_step(write_runbook) -> None:
    path = write_runbook(
        "from runbook import step\n\n"
        "async def ready():\n"
        "    return False\n\n"
        "@step(when=ready)\n"
        "def switch():\n"
        "    pass\n"
    )
    with pytest.raises(DefinitionError) as refused:
        load(path)
    assert refused.value.line == 6
    assert "step 'switch': when= must be a plain function, not async def" in str(refused.value)


@pytest.mark.parametrize(
    "factory",
    [
        "async def conn():\n    return 1\n",
        "async def conn():\n    yield 1\n",
    ],
)
def test_an_async_resource_factory_is_refused_at_its_line(write_runbook, factory: str) -> None:
    path = write_runbook("from runbook import resource\n\n@resource\n" + factory)
    with pytest.raises(DefinitionError) as refused:
        load(path)
    assert refused.value.line == 3
    assert "resource 'conn': a factory is a plain function or generator, not async def" in str(
        refused.value
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('name="a b"', "a step name must be a non-empty word without spaces, got 'a b'"),
        ("name=5", "a step name must be a non-empty word without spaces, got 5"),
        ("tags=5", "@step: tags= must be a name or a list of names, got 5"),
        ("after=[helper]", "step 'a': after= names helper, which is not a step"),
    ],
)
def test_a_bad_name_tag_or_after_is_one_line_at_the_step(write_runbook, options, message):
    path = write_runbook(
        "from runbook import step\n\ndef helper():\n    pass\n\n"
        f"@step({options})\ndef a():\n    pass\n"
    )
    with pytest.raises(DefinitionError) as refused:
        load(path)
    assert message in str(refused.value) and refused.value.line == 6
