"""Secret redaction: exact values and substrings become ``***``; short secrets only when whole."""

from __future__ import annotations

from runbook.redact import MASK, Redactor


def test_no_secrets_is_a_no_op():
    redact = Redactor()
    assert not redact
    data = {"a": "anything"}
    assert redact(data) is data and redact.text("x") == "x"


def test_exact_and_substring_redaction_in_nested_data():
    redact = Redactor(["s3cr3t-token", None, ""])
    assert redact
    data = {
        "token": "s3cr3t-token",
        "header": "Bearer s3cr3t-token",
        "list": ["ok", ("s3cr3t-token",)],
        "s3cr3t-token": 1,
        "n": 3,
        "flag": True,
        "none": None,
    }
    assert redact(data) == {
        "token": MASK,
        "header": "Bearer ***",
        "list": ["ok", [MASK]],
        MASK: 1,
        "n": 3,
        "flag": True,
        "none": None,
    }


def test_longest_secret_masked_whole():
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact.text("key=abcdefgh") == "key=***"


def test_short_secrets_only_masked_when_the_whole_value_matches():
    redact = Redactor(["42x"])
    assert redact.text("42x") == MASK
    assert redact.text("ticket 42x7") == "ticket 42x7"


def test_numbers_equal_to_a_secret_are_masked_but_not_booleans():
    redact = Redactor([1234])
    assert redact(1234) == MASK and redact("pin 1234") == "pin ***"
    assert Redactor(["True"])(True) is True


def test_other_objects_are_redacted_by_their_text():
    class Conn:
        def __str__(self) -> str:
            return "postgres://u:hunter22@db"

    assert Redactor(["hunter22"])(Conn()) == "postgres://u:***@db"


def test_add_returns_a_new_redactor():
    base = Redactor(["first-secret"])
    more = base.add("second-secret")
    assert more.text("first-secret second-secret") == "*** ***"
    assert base.text("second-secret") == "second-secret"
