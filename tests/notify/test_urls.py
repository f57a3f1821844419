from __future__ import annotations

import pytest

from runbook.notify.urls import redact_url, scrub


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("slack://hooks.slack.com/services/T0/B0/XXXX", "slack://hooks.slack.com/***"),
        ("smtp://ops:pa55word@mail.example.com:587?to=a@b", "smtp://mail.example.com:587/***"),
        ("webhook+https://h.example/x?secret=abc", "webhook+https://h.example/***"),
        ("console://", "console://"),
        ("console://stdout", "console://stdout"),
        ("smtp://mail.example.com:notaport/x", "smtp://***"),
    ],
)
def test_redact_url_keeps_scheme_host_and_port_only(url, shown):
    assert redact_url(url) == shown


def test_scrub_masks_every_form_of_the_secret():
    url = "webhook+https://hooks.example.com/in/ABCDEFGH12345678?secret=s3cr3t-value&team=ops"
    text = (
        f"POST https://hooks.example.com/in/ABCDEFGH12345678?secret=s3cr3t-value&team=ops failed;"
        f" path /in/ABCDEFGH12345678; token ABCDEFGH12345678; key s3cr3t-value; config {url}"
    )
    out = scrub(text, url)
    assert "ABCDEFGH12345678" not in out and "s3cr3t-value" not in out
    assert "webhook+https://hooks.example.com/***" in out


def test_scrub_smtp_password():
    url = "smtp://ops:pa%24%24word@mail.example.com:587?to=a@b"
    assert "pa$$word" not in scrub("login ops/pa$$word refused", url)
    assert scrub("plain text", "console://") == "plain text"
