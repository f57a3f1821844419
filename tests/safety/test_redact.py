"""The one redaction path: every form of a secret, values not keys, short secrets refused."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from runbook.errors import ParamError
from runbook.params import param, parse_assignments, resolve_params
from runbook.redact import MASK, Redactor

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
