"""runbook.urls.redact_url: the one URL-redaction policy of core and plugins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runbook import urls
from runbook.errors import ConfigError
from runbook.urls import parse_url, redact_url

ROOT = Path(__file__).resolve().parents[1]


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
        # a location whose port is not one: it may be a password whose @host was forgotten
        ("redis://user:hunter2/0", "redis://user:***/0"),
        ("postgresql://u:pw@db:99999/ops", "postgresql://u:***@db:***/ops"),
        ("postgresql://h1:5432,h2:x/ops", "postgresql://h1:5432,h2:***/ops"),
        ("postgresql://[::1]:5432/ops", "postgresql://[::1]:5432/ops"),
        ("redis://[::1:6379/0", "redis://***"),  # an IPv6 bracket missing: nothing is guessed
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
        "redis://:hunter2hunter2/0",
        "postgresql://ops:hunter2hunter2/audit",
        "postgresql://ops:hunter2hunter2@[::1/audit",
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
    root = ROOT
    pattern = re.compile(r"^def \w*(redact_url|safe_url|redact_dsn|mask_url)\w*\(", re.M)
    sources = [*root.glob("runbook/**/*.py"), *root.glob("plugins/*/runbook_*/**/*.py")]
    found = [
        str(p.relative_to(root))
        for p in sources
        if p.name != "urls.py" or p.parent.name != "runbook"
        if pattern.search(p.read_text())
    ]
    assert found == []


# -- parse_url: the one reading of a provider URL's host and port ----------------------------------


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("redis://h:6379/0", (("h", 6379),)),
        ("postgresql://ops:pw@DB.internal/ops", (("db.internal", None),)),
        ("redis://[::1]:6379/0", (("::1", 6379),)),
        ("haproxy://[fe80::1]", (("fe80::1", None),)),
        ("sqlite:////srv/runbook.db", (("", None),)),
        ("temporal://h:65535", (("h", 65535),)),
    ],
)
def test_parse_url_reads_the_host_and_port(url: str, hosts: tuple[tuple[str, int], ...]) -> None:
    parsed = parse_url(url, "lock")
    assert parsed.hosts == hosts
    assert (parsed.host, parsed.port) == hosts[0]


def test_parse_url_reads_libpq_hosts_when_asked() -> None:
    parsed = parse_url("postgresql://u@h1:5432,[::1]:5433,h3/db", "store", several_hosts=True)
    assert parsed.hosts == (("h1", 5432), ("::1", 5433), ("h3", None))
    with pytest.raises(ConfigError, match="the port is not a number"):
        parse_url("postgresql://u@h1:5432,h2:x/db", "store", several_hosts=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:pw@host:notaport/db", "store: postgresql://u:***@host:***/db: the port"),
        ("postgresql://u@host:99999/db", "store: postgresql://u@host:***/db: the port must be"),
        ("postgresql://u@host:0/db", "store: postgresql://u@host:***/db: the port must be from 1"),
        ("redis://[::1", "store: redis://***: an IPv6 host needs both its brackets"),
        ("redis://::1]:6379", "store: redis://***: an IPv6 host needs both its brackets"),
        ("redis://[::1]x/0", "store: redis://***: only an IPv6 address goes in brackets"),
        ("redis://:hunter2/0", "store: redis://:***/0: the port is not a number"),
        ("slack://hooks.slack.com:99999/services/T/B/X", "store: slack://***: the port must be"),
        ("pushgateway+http://h:port", "store: pushgateway+http://***: the port is not a number"),
    ],
)
def test_a_malformed_host_or_port_is_one_config_error(url: str, message: str) -> None:
    """Not urllib's ValueError (a traceback): a ConfigError naming the setting and the URL
    redacted, and the bad text itself is never quoted (it may be a password)."""
    with pytest.raises(ConfigError) as info:
        parse_url(url, "store")
    assert str(info.value).startswith(message)
    assert "hunter2" not in str(info.value) and "notaport" not in str(info.value)


def test_parse_url_needs_a_host_when_asked() -> None:
    with pytest.raises(ConfigError, match=r"^metrics: http://:9091: the URL has no host$"):
        parse_url("http://:9091", "metrics", need_host=True)


def test_no_module_reads_a_urls_host_or_port_itself() -> None:
    """Core and plugins read a provider URL's port through parse_url only: urllib's ``.port``
    raises ValueError on a malformed one, and four copies of the try/except drift apart."""
    pattern = re.compile(r"\b(parts|split|urlsplit\([^()]*\))\.port\b")
    sources = [*ROOT.glob("runbook/**/*.py"), *ROOT.glob("plugins/*/runbook_*/**/*.py")]
    found = [
        str(p.relative_to(ROOT))
        for p in sources
        if p != ROOT / "runbook" / "urls.py" and pattern.search(p.read_text())
    ]
    assert found == []
