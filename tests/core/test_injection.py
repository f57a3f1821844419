"""``Names``: what injection resolves besides steps, with the plugins asked only when needed."""

from __future__ import annotations

import pytest

from runbook import collect, definition, importer, injection
from runbook.injection import Names


def _counting(*names: str) -> tuple[list[int], object]:
    calls: list[int] = []

    def more() -> list[str]:
        calls.append(1)
        return list(names)

    return calls, more


def test_a_known_name_does_not_ask_the_plugins():
    calls, more = _counting("vault")
    names = Names({"shell", "greeting"}, more)  # type: ignore[arg-type]
    assert "shell" in names and "greeting" in names
    assert calls == [] and not names.complete


def test_an_unknown_name_asks_the_plugins_once():
    calls, more = _counting("vault")
    names = Names({"shell"}, more)  # type: ignore[arg-type]
    assert "vault" in names
    assert "nope" not in names and "nope" not in names
    assert calls == [1] and names.complete


def test_reading_the_whole_set_asks_the_plugins():
    calls, more = _counting("vault")
    names = Names({"shell"}, more)  # type: ignore[arg-type]
    assert sorted(names) == ["shell", "vault"] and len(names) == 2 and calls == [1]
    assert frozenset({"a"}) | names == {"a", "shell", "vault"}
    assert names == {"shell", "vault"}


def test_plugins_that_fail_are_asked_again():
    calls: list[int] = []

    def more() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("broken plugin")
        return ["vault"]

    names = Names({"shell"}, more)
    with pytest.raises(RuntimeError):
        names.__contains__("vault")
    assert "vault" in names and calls == [1, 1]


def test_without_plugins_the_names_are_complete():
    names = Names({"shell"})
    assert names.complete and "vault" not in names and list(names) == ["shell"]
    assert repr(names) == "Names(['shell'])"
    assert "plugins not asked yet" in repr(Names({"shell"}, list))


def test_the_split_names_are_still_importable_from_collect():
    assert collect.Runbook is definition.Runbook and collect.StepDef is definition.StepDef
    assert collect.Arg is definition.Arg and collect.RollbackDef is definition.RollbackDef
    assert collect.ResourceDef is definition.ResourceDef
    assert collect.find_conftests is importer.find_conftests
    assert collect.CONF_NAME == importer.CONF_NAME == "runbookconf.py"
    assert collect.BUILTINS is injection.BUILTINS
    assert collect._parameters is injection.parameters
    for name in collect.__all__:
        assert hasattr(collect, name), name
