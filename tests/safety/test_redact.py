"""The one redaction path: every form of a secret, values not keys, short secrets refused."""

from __future__ import annotations

import base64
import json
import shlex
from urllib.parse import quote, quote_plus

import pytest

from runbook.errors import CommandFailed, ParamError
from runbook.params import param, parse_assignments, resolve_params
from runbook.redact import MASK, REDACTED_KEY, Redactor, is_redacted, stored_output
from runbook.resources import ShellResult

SECRET = "s3cr3t/With+plus= é"


def _forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "plain": secret,
        "upper": secret.upper(),
        "lower": secret.lower(),
        "url": quote(secret, safe=""),
        "url path": quote(secret),
        "url form": quote_plus(secret),
        "url lowercase hex": quote(secret, safe="").lower(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "in a JSON string, ASCII-escaped": json.dumps(secret)[1:-1],
    }


QUOTED = "Tr0ub4dor\\&3\"it's"  # a backslash and both quotes: every quoting escapes something


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"password": QUOTED}),
        json.dumps({"password": QUOTED}, ensure_ascii=False),
        f"login refused for {QUOTED!r}",
        repr({"config": json.dumps({"password": QUOTED})}),
        json.dumps({"error": repr(QUOTED)}),
    ],
    ids=["json", "json unicode", "repr", "json in a repr", "repr in json"],
)
def test_a_secret_quoted_as_json_or_repr_is_masked(text: str) -> None:
    masked = Redactor([QUOTED]).text(text)
    assert MASK in masked
    for form in ("Tr0ub4dor", "&3"):
        assert form not in masked, masked


@pytest.mark.parametrize("secret", [["k3y-AAAA-1111", "k3y-BBBB-2222"], {"a": "k3y-AAAA-1111"}])
def test_a_list_or_dict_secret_is_each_of_its_items(secret: object) -> None:
    masked = Redactor([secret]).text("using key k3y-AAAA-1111")
    assert masked == f"using key {MASK}"


@pytest.mark.parametrize("form", list(_forms(SECRET)))
def test_each_form_is_masked_inside_text(form: str) -> None:
    encoded = _forms(SECRET)[form]
    masked = Redactor([SECRET]).text(f"before {encoded} after")
    assert masked == f"before {MASK} after"


@pytest.mark.parametrize("prefix", [b"", b"u:", b"us:", b"use:"])
def test_base64_inside_a_longer_blob_at_any_alignment(prefix: bytes) -> None:
    blob = base64.b64encode(prefix + SECRET.encode() + b"!tail").decode()
    masked = Redactor([SECRET]).text("Authorization: Basic " + blob)
    assert MASK in masked
    for form in _forms(SECRET).values():
        assert form not in masked


def test_values_are_masked_recursively_keys_of_records_are_not() -> None:
    redact = Redactor(["step"])
    data = {"step": "a step", "output": {"step": ["step", 1]}, "n": 3}
    assert redact.fields(data) == {"step": "a ***", "output": {MASK: [MASK, 1]}, "n": 3}
    assert redact(None) is None and redact(True) is True


def test_numbers_equal_to_a_secret_are_masked() -> None:
    assert Redactor(["123456"])({"pin": 123456, "other": 7}) == {"pin": MASK, "other": 7}


def test_an_empty_redactor_changes_nothing() -> None:
    value = {"a": [1, "x"]}
    assert Redactor()(value) is value and not Redactor()


def test_longer_secret_wins_over_a_contained_one() -> None:
    assert Redactor(["abcd", "abcdefgh"]).text("xabcdefghx") == f"x{MASK}x"


def test_short_secrets_only_mask_whole_values() -> None:
    redact = Redactor(["ab"])
    assert redact.text("ab") == MASK and redact.text("cabd") == "cabd"


# -- params: refused before anything runs --------------------------------------------------------


def _resolve(value: str, **kw):
    specs = {"token": param("token", secret=True, env="RB_T")}
    return resolve_params(specs, {"token": value} if value is not None else {}, **kw)


def test_a_secret_under_four_characters_is_a_usage_error() -> None:
    with pytest.raises(ParamError, match="'token' from -p is secret and must be at least 4"):
        _resolve("abc")
    with pytest.raises(ParamError, match=r"from \$RB_T is secret"):
        _resolve(None, environ={"RB_T": "xyz"})
    assert _resolve("abcd")["token"] == "abcd"


def test_non_utf8_values_are_usage_errors_without_the_value() -> None:
    bad = "version=1.0\udcff"  # how Python receives the byte 0xff on a UTF-8 command line
    with pytest.raises(ParamError, match="-p version: the value is not valid UTF-8"):
        parse_assignments([bad])
    with pytest.raises(ParamError, match=r"from \$RB_T: the value is not valid UTF-8"):
        _resolve(None, environ={"RB_T": "tok\udcfeen"})


def test_a_secret_quoted_as_a_shell_word_is_masked() -> None:
    secret = "it's-a-secret"
    command = shlex.join(["false", secret])  # how a command's text is written
    assert Redactor([secret]).text(f"command exited 1: {command}") == "command exited 1: false ***"


def test_each_item_of_a_secret_list_must_be_long_enough_to_mask() -> None:
    specs = {"tokens": param("tokens", type=list, secret=True)}
    with pytest.raises(ParamError, match="'tokens' from -p is secret and must be at least 4"):
        resolve_params(specs, {"tokens": "abcd-1,ef"})
    assert resolve_params(specs, {"tokens": "abcd-1,efgh"})["tokens"] == ["abcd-1", "efgh"]


def test_a_custom_type_s_message_quoting_a_secret_is_masked_in_every_form() -> None:
    def token(raw: str) -> str:
        encoded = base64.b64encode(raw.encode()).decode()
        raise ValueError(f"not a token: {raw!r} (b64 {encoded})")

    specs = {"token": param("token", type=token, secret=True)}
    with pytest.raises(ParamError) as info:
        resolve_params(specs, {"token": "plain'secret"})
    message = str(info.value)
    assert "plain" not in message and 'not a token: "***" (b64 ***)' in message, message


def test_a_command_s_tail_cut_inside_a_secret_still_masks_it() -> None:
    secret = "SuperSecretToken1234"
    stderr = secret + "Y" * 3990  # the 4,000-character tail starts inside the secret
    failed = CommandFailed(ShellResult("tool", 1, "", stderr), redact=Redactor([secret]).text)
    assert failed.stderr_tail == "***" + "Y" * 3990
    assert "Token1234" not in str(failed)


def test_a_secret_whose_case_mapping_changes_its_length_is_masked_in_either_case() -> None:
    # "straße".upper() is "STRASSE": one-for-one case-insensitive matching missed it.
    redact = Redactor(["straße-token-1"])
    assert redact.text("user STRASSE-TOKEN-1 logged in") == "user *** logged in"
    assert redact.text("Straße-Token-1") == "***"
    assert Redactor(["İstanbul-key"]).text("i̇stanbul-key") == "***"  # lower() adds a dot


def test_an_output_holding_a_secret_is_stored_masked_in_the_marked_wrapper() -> None:
    redact = Redactor(["hunter2-token"])
    stored = stored_output({"dsn": "db://u:hunter2-token@h"}, redact)
    assert stored == {REDACTED_KEY: True, "value": {"dsn": "db://u:***@h"}}
    assert is_redacted(stored)
    assert stored_output(stored, redact) is stored  # already stored: never wrapped twice


def test_an_output_without_a_secret_or_without_a_mask_is_stored_as_it_is() -> None:
    output = {"version": "1.2.3"}
    assert stored_output(output, Redactor(["hunter2-token"])) is output
    assert stored_output({"t": "hunter2-token"}, None) == {"t": "hunter2-token"}
    assert stored_output(None, Redactor(["hunter2-token"])) is None
    assert not is_redacted(output)
    assert not is_redacted({REDACTED_KEY: "yes", "value": 1})  # only the marker True counts
    assert not is_redacted(["__runbook_redacted__"])
