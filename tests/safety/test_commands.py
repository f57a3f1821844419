"""runbook.commands: argv and quoted templates, the f-string trap check, URL building."""

from __future__ import annotations

import shlex

import pytest

from runbook import commands
from runbook.commands import Tainted, build, find_trap, tainted_values, unsafe_command, url
from runbook.errors import CommandError, UnsafeCommand

PAYLOADS = ["; touch X", "$(touch X)", "`touch X`", "| touch X", "&& touch X", "1.0\ntouch X"]


def test_argv_list_runs_without_a_shell() -> None:
    cmd = build(["deployctl", "install", "web", "1.0; rm -rf /"])
    assert cmd.argv == ("deployctl", "install", "web", "1.0; rm -rf /")
    assert not cmd.uses_shell
    assert cmd.args() == ["deployctl", "install", "web", "1.0; rm -rf /"]
    assert cmd.text == "deployctl install web '1.0; rm -rf /'"


def test_argv_items_must_be_plain_values() -> None:
    assert build(["sleep", 1]).argv == ("sleep", "1")
    with pytest.raises(CommandError, match="argv items must be strings"):
        build(["echo", None])
    with pytest.raises(CommandError, match="empty argv"):
        build([])
    with pytest.raises(CommandError, match="takes no placeholder values"):
        build(["echo", "{v}"], {"v": "x"})


@pytest.mark.parametrize("payload", PAYLOADS)
def test_template_quotes_every_placeholder(payload: str) -> None:
    cmd = build("deployctl install {svc} {version}", {"svc": "web", "version": payload})
    assert cmd.uses_shell
    # The shell sees exactly three words after the command: the payload is one of them.
    assert shlex.split(cmd.script) == ["deployctl", "install", "web", payload]


def test_template_fields_attributes_and_items() -> None:
    plan = {"target": "green", "version": "2 beta"}
    cmd = build("deploy {plan[target]} {plan[version]}", {"plan": plan})
    assert cmd.script == "deploy green '2 beta'"


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("echo {v} {w}", {"w": 1}, r"no value for \{v\}; pass v="),
        ("echo {v}", {"v": 1, "w": 2}, "no placeholder for w"),
        ("echo {}", {"v": 1}, "placeholders need names"),
        ("echo {v", {"v": 1}, "bad template"),
        ("echo {v[x]}", {"v": {}}, "cannot fill"),
        ("   ", {}, "empty command"),
    ],
)
def test_template_mistakes_are_errors(template: str, values: dict, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        build(template, values)


def test_plain_string_runs_as_written() -> None:
    assert build("ls -l | wc -l").script == "ls -l | wc -l"
    assert build("awk '{print $1}' f").script == "awk '{print $1}' f"  # no values: no template
    with pytest.raises(CommandError, match="takes no values"):
        build("echo {v}", {"v": 1}, unsafe=True)


def test_tainted_values_walk_params_and_outputs() -> None:
    found = tainted_values(
        {"version": "1.0; touch X", "replicas": 3, "safe": "web-1.0"},
        {"plan": {"target": "a b", "hosts": ["ok", "x|y"]}, "n": 4},
    )
    assert {(t.source, t.value, t.name) for t in found} == {
        ("param 'version'", "1.0; touch X", "version"),
        ("output of step 'plan'['target']", "a b", "target"),
        ("output of step 'plan'['hosts'][1]", "x|y", "v_1"),
    }


def test_find_trap_names_the_longest_hit() -> None:
    tainted = [Tainted("param 'a'", "x y", "a"), Tainted("param 'b'", "x y z", "b")]
    assert find_trap("echo x y z", tainted).name == "b"
    assert find_trap("echo x", tainted) is None


def test_refusal_names_source_and_safe_forms() -> None:
    hit = Tainted("param 'version'", "1.0; touch X", "version")
    error = unsafe_command("deployctl install web 1.0; touch X", hit)
    assert isinstance(error, UnsafeCommand)
    text = str(error)
    assert "param 'version'" in text
    assert 'shell(["deployctl", "install", "web", version])' in text
    assert 'shell("deployctl install web {version}", version=...)' in text
    assert "touch X" not in text  # the hostile value is shown as its placeholder
    assert error.source == "param 'version'"


def test_shell_c_inside_argv_is_checked() -> None:
    assert commands.command_scripts(build(["bash", "-c", "echo $(x)"])) == ["echo $(x)"]
    assert commands.command_scripts(build(["/bin/sh", "-c", "a", "b"])) == ["a"]
    assert commands.command_scripts(build(["echo", "-c", "a"])) == []


@pytest.mark.parametrize("payload", PAYLOADS)
def test_url_values_stay_one_component(payload: str) -> None:
    built = url("http://127.0.0.1:9/items/{v}?q={v}&n=1", v=payload)
    path, _, query = built.partition("?")
    assert path.count("/") == 4  # no extra segment
    assert query.endswith("&n=1") and query.count("&") == 1  # no extra parameter
    assert all(c not in built for c in " ;$`|\n")


def test_url_encodes_separators() -> None:
    assert url("http://h/{a}/{b}", a="../admin", b="x?y#z") == "http://h/..%2Fadmin/x%3Fy%23z"


# -- a placeholder where shlex.quote cannot keep it one word -------------------------------------

BREAKOUTS = ["'; touch X; '", '"; touch X; "', "\ntouch X\n", "`touch X`", "$(touch X)"]


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ("echo '{n}'", "inside single quotes"),
        ("echo 'hello {n}!'", "inside single quotes"),
        ('grep "{n}" file', "inside double quotes"),
        ('echo "$HOME/{n}"', "inside double quotes"),
        ("echo $'{n}'", "inside $'...' quotes"),
        ('echo $"{n}"', "inside double quotes"),
        ("echo `cat {n}`", "inside backticks"),
        ('echo "$(cat `echo {n}`)"', "inside backticks"),
        ("echo ${{X:-{n}}}", "inside ${...}"),
        ("echo ${n}", "right after $"),
        ("echo \\{n}", "right after a backslash"),
        ("echo hi # {n}", "in a comment"),
        ("cat <<EOF\nhi {n}\nEOF", "in a here-document"),
        ("cat <<-'EOF' >f\n\tx\n\t{n}\n\tEOF", "in a here-document"),
        ("cat <<{n}", "in a here-document"),
    ],
)
@pytest.mark.parametrize("value", BREAKOUTS)
def test_a_placeholder_the_shell_would_not_read_as_one_word_is_refused(
    template: str, where: str, value: str
) -> None:
    with pytest.raises(UnsafeCommand) as info:
        build(template, {"n": value})
    message = str(info.value)
    assert "\n" not in message  # one line
    assert f"placeholder {{n}} is {where}" in message
    assert "touch X" not in message  # the value is never shown


def test_the_refusal_of_a_quoted_placeholder_says_to_remove_the_quotes() -> None:
    with pytest.raises(
        UnsafeCommand, match="remove the quotes: each placeholder is quoted for you"
    ):
        build("echo '{name}'", {"name": "x"})
    with pytest.raises(UnsafeCommand, match=r"remove the quotes.*grep \{pattern\} file"):
        build('grep "{pattern}" file', {"pattern": "a b"})


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("echo 'lit' {n} \"lit\"", ["echo", "lit", "V", "lit"]),
        ("echo it\\'s {n}", ["echo", "it's", "V"]),
        ('echo "a\\"b" {n}', ["echo", 'a"b', "V"]),
        ("awk '{{print $1}}' {n}", ["awk", "{print $1}", "V"]),
        ("echo a#b {n}", ["echo", "a#b", "V"]),
        ("echo x # a comment\necho {n}", None),
        ("cat <<EOF\nhi 'there'\nEOF\necho {n}", None),
        ("cat <<-EOF\n\thi\n\tEOF\necho {n}", None),
        ("cat <<< {n}", None),
        ("echo $(printf %s {n})", None),
        ('echo "$(printf %s {n})"', None),
        ("echo $((1 + 2)) {n}", None),
        ("echo $HOME {n}", None),
        ("f() {{ echo {n}; }}; f", None),
    ],
)
def test_placeholders_outside_quotes_still_build(template: str, words: list | None) -> None:
    value = "'; touch X; \"`$(x)`\n"
    cmd = build(template, {"n": value})
    assert cmd.script is not None
    if words is not None:
        assert shlex.split(cmd.script) == [value if w == "V" else w for w in words]


def test_tainted_values_have_no_cap_on_count_or_depth() -> None:
    many = {"plan": [f"item {i}" for i in range(5000)]}
    assert len(tainted_values({}, many)) == 5000
    deep: object = "a b"
    for _ in range(50):
        deep = {"k": [deep]}
    [found] = tainted_values({}, {"plan": deep})
    assert found.value == "a b" and found.source.count("['k'][0]") == 50
    [key] = tainted_values({}, {"plan": {"web 1": 1}})
    assert (key.source, key.value) == ("output of step 'plan' key 'web 1'", "web 1")


def test_trap_index_finds_what_a_plain_search_finds() -> None:
    import random

    rng = random.Random(7)
    alphabet = "ab ;'"
    for _ in range(300):
        values = ["".join(rng.choices(alphabet, k=rng.randint(2, 6))) for _ in range(40)]
        tainted = [Tainted(f"param 'p{i}'", v, f"p{i}") for i, v in enumerate(values)]
        tainted = [t for t in tainted if len(t.value.strip()) >= 2 and set(t.value) & set(" ;'")]
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 400)))
        hits = [t for t in tainted if t.value in text]
        expected = max(hits, key=lambda t: len(t.value)) if hits else None
        assert commands.TrapIndex(tainted).find(text) == expected
