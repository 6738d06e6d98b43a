"""The one URL redaction helper and the formatters' safety net."""

from __future__ import annotations

import json
import logging

import pytest

from citywatch.logs import JsonFormatter, TextFormatter, redact_url, scrub


@pytest.mark.parametrize("url,shown", [
    ("http://user:secret@127.0.0.1:8086", "http://***@127.0.0.1:8086"),
    ("mqtts://dev%40x:p%3Ass@broker:8883", "mqtts://***@broker:8883"),
    ("https://hooks.example/x?token=abc&sig=def", "https://hooks.example/x?token=***&sig=***"),
    ("https://tok@hooks.example/x#frag", "https://***@hooks.example/x"),
    ("http://127.0.0.1:8086", "http://127.0.0.1:8086"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_formatters_scrub_userinfo_left_in_a_message():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "cannot reach %s (%s)",
                               ("http://admin:hunter2@db:8086/write", "mqtt://u:p4ss@b:1883"), None)
    for fmt in (JsonFormatter(), TextFormatter("%(message)s")):
        out = fmt.format(record)
        assert "hunter2" not in out and "p4ss" not in out
        assert "db:8086/write" in out and "b:1883" in out
    assert json.loads(JsonFormatter().format(record))["msg"] == "cannot reach http://***@db:8086/write (mqtt://***@b:1883)"
    assert scrub("no url here: a@b") == "no url here: a@b"


def test_setting_errors_never_show_userinfo(monkeypatch):
    from citywatch.errors import ConfigError
    from citywatch.settings import Settings

    monkeypatch.setenv("CW_INFLUX_URL", "ftp://admin:hunter2@db:8086")
    with pytest.raises(ConfigError) as exc:
        Settings.load()
    assert "hunter2" not in str(exc.value) and str(exc.value).startswith("CW_INFLUX_URL:")
    monkeypatch.setenv("CW_INFLUX_URL", "http://db:8086")
    monkeypatch.setenv("CW_MQTT_URL", "mqtt://u:hunter2@broker:notaport")
    with pytest.raises(ConfigError) as exc:
        Settings.load()
    assert "hunter2" not in str(exc.value) and str(exc.value).startswith("CW_MQTT_URL:")
