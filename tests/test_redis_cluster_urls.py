"""ALLOTMENT_REDIS_CLUSTER_URLS is checked when the settings are read: each seed node a
redis:// or rediss:// URL with a host and a port, with a sentence that says what to write
and never the password (docs/configuration.md, docs/scale-out.md "Redis Cluster")."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from allotment.cli import main
from allotment.config import Settings, get_settings


@pytest.mark.parametrize(
    "urls",
    [
        "redis://10.0.0.5:7000",
        " redis://10.0.0.5:7000 , redis://10.0.0.6:7000,",
        "rediss://:secret@redis-1.internal:7000,rediss://redis-2.internal:7000",
        "redis://user:secret@[::1]:7000/0",
        "",  # set but empty: no cluster, as unset
    ],
)
def test_seed_urls_that_are_accepted(urls: str) -> None:
    assert Settings(redis_cluster_urls=urls).redis_cluster_urls == urls


@pytest.mark.parametrize(
    ("urls", "said"),
    [
        ("10.0.0.5:7000", "is not a redis:// or rediss:// URL with a host and a port"),
        ("http://10.0.0.5:7000", "is not a redis:// or rediss:// URL with a host and a port"),
        ("redis://10.0.0.5", "is not a redis:// or rediss:// URL with a host and a port"),
        ("redis://:7000", "is not a redis:// or rediss:// URL with a host and a port"),
        ("redis://10.0.0.5:seven", "is not a redis:// or rediss:// URL with a host and a port"),
        ("redis://10.0.0.5:70000", "is not a redis:// or rediss:// URL with a host and a port"),
        ("redis://10.0.0.5:7000,redis:/10.0.0.6:7000", "'redis:/10.0.0.6:7000' is not a"),
        ("redis://10.0.0.5:7000/2", "a Redis Cluster has only database 0"),
        ("redis://10.0.0.5:7000,rediss://10.0.0.6:7000", "mixes redis:// and rediss://"),
    ],
)
def test_a_bad_seed_url_is_refused_with_what_to_write(urls: str, said: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(redis_cluster_urls=urls)
    error = refused.value.errors()[0]
    assert error["loc"] == ("redis_cluster_urls",)
    assert said in error["msg"], error["msg"]


def test_the_password_of_a_refused_url_is_not_repeated() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(redis_cluster_urls="redis://:hunter2@10.0.0.5")
    message = refused.value.errors()[0]["msg"]
    assert "hunter2" not in message and "'redis://:***@10.0.0.5'" in message


def test_the_command_names_the_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOTMENT_REDIS_CLUSTER_URLS", "10.0.0.5:7000")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["keys", "list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "invalid configuration: ALLOTMENT_REDIS_CLUSTER_URLS: " in result.output
    assert "write each seed node as redis://host:port" in result.output
    assert "Traceback" not in result.output
