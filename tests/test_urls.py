"""runbook.urls.redact_url: the one URL-redaction policy of core and plugins."""

from __future__ import annotations

import pytest

from runbook import urls
from runbook.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # location URLs: only credentials go
        ("postgresql://ops:s3cret@db:5432/audit", "postgresql://ops:***@db:5432/audit"),
        ("postgres://ops@db/audit?schema=team_a", "postgres://ops@db/audit?schema=team_a"),
        (
            "postgresql://u:p%40ss@h/db?password=x&sslmode=require&sslpassword=y",
            "postgresql://u:***@h/db?password=***&sslmode=require&sslpassword=***",
        ),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unencoded @ in it
        ("redis://:t0ps3cret@127.0.0.1:1/0?prefix=rb:", "redis://:***@127.0.0.1:1/0?prefix=rb:"),
        ("redis://h:1/0?password=pw&prefix=x", "redis://h:1/0?password=***&prefix=x"),
        ("rediss://h/0?token=abc&ssl_cert_reqs=none", "rediss://h/0?token=***&ssl_cert_reqs=none"),
        ("jsonl://.runbook/audit.jsonl", "jsonl://.runbook/audit.jsonl"),
        ("jsonl:///var/log/audit.jsonl?fsync=false", "jsonl:///var/log/audit.jsonl?fsync=false"),
        ("sqlite:////srv/rb.db?timeout=5", "sqlite:////srv/rb.db?timeout=5"),
        ("sqlite://", "sqlite://"),
        ("memory://shared", "memory://shared"),
        ("logging://runbook.audit?level=INFO", "logging://runbook.audit?level=INFO"),
        ("postgresql://h/db#frag-secret", "postgresql://h/db"),
        # capability URLs: scheme, host and port only
        ("slack://hooks.slack.com/services/T0/B0/XXXX", "slack://hooks.slack.com/***"),
        ("smtp://ops:pa55word@mail.example.com:587?to=a@b", "smtp://mail.example.com:587/***"),
        ("webhook+https://h.example/x?secret=abc", "webhook+https://h.example/***"),
        ("https://KEY@o1.ingest.example.io/42", "https://o1.ingest.example.io/***"),
        ("console://", "console://"),
        ("console://stdout", "console://stdout"),
        ("smtp://mail.example.com:notaport/x", "smtp://***"),
        # not a URL at all: nothing of it is shown
        ("s3cret-without-scheme", "***"),
        ("://s3cret", "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ops:hunter2hunter2@db/audit",
        "postgresql://ops@db/audit?password=hunter2hunter2",
        "redis://:hunter2hunter2@h:6379/0",
        "slack://hooks.slack.com/services/T0/B0/hunter2hunter2",
        "webhook+https://h/x?sig=hunter2hunter2",
        "smtp://u:hunter2hunter2@h:25",
        "https://hunter2hunter2@h/1",
    ],
)
def test_no_credential_survives(url: str) -> None:
    assert "hunter2hunter2" not in redact_url(url)


def test_there_is_one_url_redaction_function() -> None:
    """Core and plugins share runbook.urls.redact_url: no module defines its own."""
    import runbook.audit.query as query
    import runbook.notify.urls as notify_urls

    assert notify_urls.redact_url is urls.redact_url
    assert not hasattr(query, "safe_url")
    pg = pytest.importorskip("runbook_postgres._db")
    redis_locks = pytest.importorskip("runbook_redis.locks")
    assert pg.redact_url is urls.redact_url
    assert redis_locks.redact_url is urls.redact_url


def test_no_other_module_defines_a_url_redaction() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^def \w*(redact_url|safe_url|redact_dsn|mask_url)\w*\(", re.M)
    sources = [*root.glob("runbook/**/*.py"), *root.glob("plugins/*/runbook_*/**/*.py")]
    found = [
        str(p.relative_to(root))
        for p in sources
        if p.name != "urls.py" or p.parent.name != "runbook"
        if pattern.search(p.read_text())
    ]
    assert found == []
