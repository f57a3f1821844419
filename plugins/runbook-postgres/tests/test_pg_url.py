"""URL options and redaction: no server needed."""

from __future__ import annotations

import pytest
from runbook_postgres._db import PgTarget

from runbook.errors import ConfigError
from runbook.urls import redact_url


def test_defaults() -> None:
    target = PgTarget.parse("postgresql://app@db.internal:5432/ops", "store")
    assert target.schema == "runbook" and target.pool_max == 4 and target.pool_timeout == 10
    assert target.conninfo == (
        "postgresql://app@db.internal:5432/ops?application_name=runbook&connect_timeout=5"
    )


def test_runbook_options_are_not_passed_to_libpq() -> None:
    target = PgTarget.parse(
        "postgresql://app:pw@db/ops?schema=team_a&pool_max=8&pool_timeout=2.5"
        "&sslmode=verify-full&connect_timeout=3&application_name=deployer",
        "store",
    )
    assert (target.schema, target.pool_max, target.pool_timeout) == ("team_a", 8, 2.5)
    assert target.conninfo == (
        "postgresql://app:pw@db/ops?sslmode=verify-full&connect_timeout=3&application_name=deployer"
    )
    assert target.password == "pw"
    assert target.safe_url == (
        "postgresql://app:***@db/ops?schema=team_a&pool_max=8&pool_timeout=2.5"
        "&sslmode=verify-full&connect_timeout=3&application_name=deployer"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db/ops?schema=Robert');--", "plain SQL identifier"),
        ("postgresql://db/ops?pool_max=lots", "bad pool option"),
        ("mysql://db/ops", "expected a postgresql:// URL"),
    ],
)
def test_bad_options_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PgTarget.parse(url, "store")


@pytest.mark.parametrize("setting", ["store", "lock", "audit"])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:pw@host:notaport/db", "postgresql://u:***@host:***/db: the port is not a"),
        ("postgresql://u@host:99999/db", "postgresql://u@host:***/db: the port must be from 1"),
        ("postgresql://u:pw@[::1/db", "postgresql://***: an IPv6 host needs both its brackets"),
        ("postgresql://u@h1:5432,h2:x/db", "postgresql://u@h1:5432,h2:***/db: the port is not"),
    ],
)
def test_a_malformed_host_or_port_is_a_config_error_naming_the_setting(
    setting: str, url: str, message: str
) -> None:
    """Before, the bracket was urllib's ValueError (a traceback from ``runbook exec``) and a bad
    port reached libpq, an exit 1 about resolving the host."""
    with pytest.raises(ConfigError) as info:
        PgTarget.parse(url, setting)
    assert str(info.value).startswith(f"{setting}: {message}")


def test_several_hosts_are_a_libpq_url() -> None:
    target = PgTarget.parse("postgresql://u@h1:5432,h2:5433/db", "store")
    assert target.conninfo.startswith("postgresql://u@h1:5432,h2:5433/db?")


def test_redact_url_hides_passwords_everywhere() -> None:
    assert redact_url("postgresql://u:p%40ss@h/db?password=x&sslmode=require") == (
        "postgresql://u:***@h/db?password=***&sslmode=require"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def _same(a: str, b: str) -> bool:
    return PgTarget.parse(a, "store").identity == PgTarget.parse(b, "store").identity


def test_one_database_has_one_identity_however_its_url_is_written() -> None:
    base = "postgresql://app:pw@DB.internal/ops?sslmode=require&schema=a"
    assert _same(base, "postgres://app:other@db.internal:5432/ops?schema=b&sslmode=require")
    assert _same(base, f"{base}&application_name=x&connect_timeout=9&pool_max=2")
    assert _same(
        "postgresql://app@db/ops?sslmode=require&target_session_attrs=read-write",
        "postgresql://app@db/ops?target_session_attrs=read-write&sslmode=require",
    )


@pytest.mark.parametrize(
    "other",
    [
        "postgresql://app@db.internal:5432/ops2?sslmode=require",  # another database
        "postgresql://app@db.internal:5433/ops?sslmode=require",  # another server
        "postgresql://app@db.replica:5432/ops?sslmode=require",
        "postgresql://auditor@db.internal:5432/ops?sslmode=require",  # another role
        "postgresql://app@db.internal:5432/ops?sslmode=disable",  # weaker TLS
        "postgresql://app@db.internal:5432/ops",
    ],
)
def test_another_database_role_or_tls_setting_is_another_identity(other: str) -> None:
    assert not _same("postgresql://app@db.internal:5432/ops?sslmode=require", other)


def test_the_identity_holds_no_password() -> None:
    for url in ("postgresql://app:s3cret@db/ops", "postgresql://app@db/ops?password=s3cret"):
        assert "s3cret" not in repr(PgTarget.parse(url, "store").identity)
