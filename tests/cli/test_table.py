"""runbook.cli.table: the one layout of every CLI listing."""

from __future__ import annotations

from runbook.cli.table import table


def test_columns_are_as_wide_as_their_widest_cell_and_lines_end_in_no_blank():
    lines = table([["NAME", "STATE", ""], ["deploy", "ok", ""], ["db", "failed", "why: disk"]])
    assert lines == ["NAME    STATE", "deploy  ok", "db      failed  why: disk"]


def test_right_aligned_columns_and_an_indent():
    assert table([["SEQ", "KIND"], ["7", "a"], ["12", "b"]], indent="  ", right={0}) == [
        "  SEQ  KIND",
        "    7  a",
        "   12  b",
    ]


def test_no_rows_no_lines():
    assert table([]) == []
