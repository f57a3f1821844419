"""param(): conversion, choices, sources and their precedence; one error listing every problem."""

from __future__ import annotations

import pytest

from runbook import ParamError, param
from runbook.errors import DefinitionError
from runbook.params import Params, parse_assignments, resolve_params


def specs(*declared):
    return {p.name: p for p in declared}


@pytest.mark.parametrize(
    ("typ", "raw", "expected"),
    [
        (int, "42", 42),
        (float, "2.5", 2.5),
        (str, "abc", "abc"),
        (list, "a, b,,c", ["a", "b", "c"]),
        (list, ["x", "y"], ["x", "y"]),
        (int, 7, 7),
    ],
)
def test_conversion(typ, raw, expected):
    got = resolve_params(specs(param("p", type=typ)), {"p": raw}, environ={})
    assert got.p == expected and type(got.p) is type(expected)


@pytest.mark.parametrize("raw", ["1", "true", "Yes", "on", "y", True])
def test_bool_true_forms(raw):
    assert resolve_params(specs(param("f", type=bool)), {"f": raw}, environ={}).f is True


@pytest.mark.parametrize("raw", ["0", "false", "NO", "off", "n", False])
def test_bool_false_forms(raw):
    assert resolve_params(specs(param("f", type=bool)), {"f": raw}, environ={}).f is False


def test_bool_rejects_other_words():
    with pytest.raises(ParamError, match=r"parameter 'f' from -p: expected bool"):
        resolve_params(specs(param("f", type=bool)), {"f": "maybe"}, environ={})


def test_custom_callable_type():
    def version(text):
        if not text.startswith("v"):
            raise ValueError("must start with v")
        return text[1:]

    got = resolve_params(specs(param("v", type=version)), {"v": "v1.2"}, environ={})
    assert got.v == "1.2"
    with pytest.raises(
        ParamError, match=r"parameter 'v' from -p: expected version, got '1.2': must start with v"
    ):
        resolve_params(specs(param("v", type=version)), {"v": "1.2"}, environ={})


def test_custom_type_message_of_a_secret_masks_the_value():
    def pin(text):
        raise ValueError(f"{text} is not a 4-digit pin")

    with pytest.raises(ParamError) as info:
        resolve_params(specs(param("p", type=pin, secret=True)), {"p": "s3cr3tvalue"}, environ={})
    assert "s3cr3tvalue" not in str(info.value)
    assert "*** is not a 4-digit pin" in str(info.value)


def test_builtin_type_message_stays_short():
    with pytest.raises(ParamError) as info:
        resolve_params(specs(param("n", type=int)), {"n": "x"}, environ={})
    assert str(info.value) == "parameter 'n' from -p: expected int, got 'x'"


def test_unknown_parameter_suggests_the_close_name():
    with pytest.raises(ParamError) as info:
        resolve_params(specs(param("version", default="1")), {"verison": "3"}, environ={})
    assert "unknown parameter 'verison'; did you mean 'version'?" in str(info.value)
    with pytest.raises(ParamError) as info:
        resolve_params(specs(param("version", default="1")), {"zzz": "3"}, environ={})
    assert "did you mean" not in str(info.value)


def test_default_refused_by_its_type_is_a_definition_error_at_the_param_line():
    with pytest.raises(DefinitionError) as info:
        param("n", type=int, default="x")
    assert info.value.file == __file__
    assert "parameter 'n': default refused: expected int, got 'x'" in str(info.value)
    with pytest.raises(DefinitionError, match="'red' is not one of 'blue'"):
        param("c", default="red", choices=["blue"])
    with pytest.raises(DefinitionError, match="expected bool"):
        param("f", type=bool, default="maybe")


def test_valid_defaults_are_converted_by_builtin_types_and_kept_for_custom_ones():
    assert param("n", type=int, default="3").default == 3
    assert param("r", type=int, default=2, choices=range(1, 20)).default == 2
    assert param("o", type=int, default=None).default is None

    def version(text):
        if not text.startswith("v"):
            raise ValueError("must start with v")
        return text[1:]

    # A custom type's default is its output already: not passed through it again.
    assert param("v", type=version, default="1.0").default == "1.0"


def test_a_runbook_with_a_bad_default_fails_to_load_naming_its_line(tmp_path):
    from runbook import load

    path = tmp_path / "rb.py"
    path.write_text("from runbook import param, step\n\nn = param('n', type=int, default='x')\n")
    with pytest.raises(DefinitionError) as info:
        load(path)
    assert (info.value.file, info.value.line) == (str(path), 3)


def test_choices_list_and_range():
    declared = specs(
        param("color", choices=["blue", "green"]), param("replicas", type=int, choices=range(1, 20))
    )
    ok = resolve_params(declared, {"color": "green", "replicas": "19"}, environ={})
    assert (ok.color, ok.replicas) == ("green", 19)
    with pytest.raises(ParamError) as info:
        resolve_params(declared, {"color": "red", "replicas": "20"}, environ={})
    text = str(info.value)
    assert "'red' is not one of 'blue', 'green'" in text
    assert "20 is not one of 1..19" in text


def test_every_problem_is_reported_in_one_error():
    declared = specs(
        param("version"),
        param("replicas", type=int),
        param("color", choices=["blue", "green"]),
        param("ok", default=1),
    )
    with pytest.raises(ParamError) as info:
        resolve_params(declared, {"replicas": "many", "color": "red", "colour": "x"}, environ={})
    problems = info.value.problems
    assert len(problems) == 4
    joined = "\n".join(problems)
    assert (
        "unknown parameter 'colour'" in joined
        and "declared: color, ok, replicas, version" in joined
    )
    assert "missing required parameter 'version'" in joined
    assert "parameter 'replicas' from -p: expected int, got 'many'" in joined
    assert "'red' is not one of" in joined
    assert info.value.exit_code == 2


def test_env_variable_is_a_source_and_named_in_errors():
    declared = specs(param("token", env="DEPLOY_TOKEN"), param("n", type=int, env="N"))
    got = resolve_params(declared, {}, environ={"DEPLOY_TOKEN": "abc", "N": "3"})
    assert (got.token, got.n) == ("abc", 3)
    with pytest.raises(ParamError, match=r"parameter 'n' from \$N: expected int"):
        resolve_params(declared, {}, environ={"DEPLOY_TOKEN": "abc", "N": "x"})
    with pytest.raises(
        ParamError,
        match=r"missing required parameter 'token' \(-p token=\.\.\. or "
        r"\$DEPLOY_TOKEN\)",
    ):
        resolve_params(declared, {"n": 1}, environ={})


def test_precedence_explicit_then_env_then_config_then_default():
    declared = specs(param("replicas", type=int, default=2, env="REPLICAS"))
    assert resolve_params(declared, {}, environ={}).replicas == 2
    assert resolve_params(declared, {}, config_defaults={"replicas": 6}, environ={}).replicas == 6
    assert (
        resolve_params(
            declared, {}, config_defaults={"replicas": 6}, environ={"REPLICAS": "4"}
        ).replicas
        == 4
    )
    assert (
        resolve_params(
            declared, {"replicas": "9"}, config_defaults={"replicas": 6}, environ={"REPLICAS": "4"}
        ).replicas
        == 9
    )


def test_config_values_are_validated_too():
    declared = specs(param("replicas", type=int, choices=range(1, 5), default=2))
    with pytest.raises(ParamError, match=r"parameter 'replicas' from config: 6 is not one of 1..4"):
        resolve_params(declared, {}, config_defaults={"replicas": 6}, environ={})


def test_secret_value_never_shown_in_errors():
    declared = specs(
        param("token", secret=True, type=int), param("pin", secret=True, choices=["0000"])
    )
    with pytest.raises(ParamError) as info:
        resolve_params(declared, {"token": "hunter2-secret", "pin": "9876"}, environ={})
    text = str(info.value)
    assert "hunter2-secret" not in text and "9876" not in text
    assert "parameter 'token' from -p: expected int, got ***" in text
    assert "*** is not one of" in text


def test_params_object_attribute_access_read_only_and_public_view():
    got = resolve_params(
        specs(param("version"), param("token", secret=True)),
        {"version": "1.0", "token": "t0ps3cret"},
        environ={},
    )
    assert isinstance(got, Params)
    assert got.version == "1.0" and got["token"] == "t0ps3cret"
    assert got.public() == {"version": "1.0", "token": "***"}
    assert "t0ps3cret" not in repr(got)
    with pytest.raises(AttributeError, match="read-only"):
        got.version = "2"
    with pytest.raises(AttributeError, match="no parameter 'nope'"):
        _ = got.nope


def test_parse_assignments():
    assert parse_assignments(["a=1", "b = x=y", "c="]) == {"a": "1", "b": " x=y", "c": ""}
    with pytest.raises(ParamError) as info:
        parse_assignments(["ok=1", "novalue", "=3"])
    assert info.value.problems == [
        "-p expects key=value, got 'novalue'",
        "-p expects key=value, got '=3'",
    ]


def test_a_key_given_twice_is_an_error_without_echoing_values():
    with pytest.raises(ParamError) as info:
        parse_assignments(["version=1", "version=hunter2"])
    assert info.value.problems == ["-p version is given more than once: give it once"]
    assert info.value.exit_code == 2


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity"])
def test_a_float_that_is_not_finite_is_refused_before_the_run(raw):
    # NaN was stored as bare NaN (runs --json printed invalid JSON) and audited as "NaN".
    with pytest.raises(ParamError, match=r"'rate' from -p: .* is NaN or Infinity as float"):
        resolve_params(specs(param("rate", type=float)), {"rate": raw})
    with pytest.raises(DefinitionError, match="NaN or Infinity"):
        param("rate", type=float, default=float("nan"))
    assert resolve_params(specs(param("rate", type=float)), {"rate": "1e3"})["rate"] == 1000.0


def test_a_type_returning_what_a_run_cannot_store_is_a_param_error_not_a_store_error():
    from decimal import Decimal

    with pytest.raises(ParamError, match=r"'amount' from -p: '1.5' is a Decimal as Decimal"):
        resolve_params(specs(param("amount", type=Decimal)), {"amount": "1.5"})


def test_a_path_param_is_a_path_to_steps_and_its_text_in_the_record():
    from pathlib import Path

    params = resolve_params(specs(param("where", type=Path)), {"where": "/srv/app"})
    assert params.where == Path("/srv/app")
    assert params.public() == {"where": "/srv/app"}  # what the store and the trail get


@pytest.mark.parametrize("name", ["keys", "items", "values", "get", "public"])
def test_a_parameter_named_like_a_params_method_is_a_definition_error_at_its_line(name):
    # params.keys was the mapping's method: a step got a bound method and failed far away.
    with pytest.raises(DefinitionError, match=rf"params.{name} is a method") as info:
        param(name)
    assert info.value.file == __file__
    assert param("key_names").name == "key_names"


def test_a_path_param_runs_on_the_sqlite_store_stored_as_its_text(tmp_path):
    # The store refused it: "params is not JSON-serialisable (Object of type PosixPath ...)".
    from runbook import Runner, load

    rb = tmp_path / "paths.py"
    rb.write_text(
        "from pathlib import Path\n"
        "from runbook import param, step\n"
        "where = param('where', type=Path)\n"
        "@step\n"
        "def kind(params):\n"
        "    return type(params.where).__name__ + ':' + str(params.where)\n"
    )
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    with Runner(store=store, audit=[], locks=None, actor="a", params={"where": "/srv"}) as r:
        result = r.run(load(rb))
        assert result.status == "succeeded", result.error
        assert result.steps["kind"].output == "PosixPath:/srv"
        assert r.store.get_run(result.run_id).params == {"where": "/srv"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": 5}, "param(name): the name must be a word that -p NAME=VALUE can give, got 5"),
        ({"name": "a=b"}, "got 'a=b'"),
        ({"name": "two words"}, "got 'two words'"),
        ({"name": ""}, "got ''"),
        ({"name": "n", "choices": 5}, "parameter 'n': choices= must be a list of allowed values"),
        ({"name": "n", "choices": "abc"}, "choices= must be a list of allowed values, got 'abc'"),
        ({"name": "n", "type": "int"}, "parameter 'n': type= must be callable"),
        ({"name": "n", "secret": "yes"}, "parameter 'n': secret= must be True or False"),
        ({"name": "n", "env": 3}, "parameter 'n': env= must name an environment variable"),
    ],
)
def test_a_malformed_declaration_is_a_definition_error_at_its_line(kwargs, message):
    with pytest.raises(DefinitionError) as info:
        param(**kwargs)
    assert message in str(info.value)
    assert info.value.file == __file__


def test_a_name_with_a_dash_or_dots_is_still_a_parameter():
    assert param("max-surge", type=int, default=1).name == "max-surge"
    assert param("db.host", default="h").name == "db.host"
