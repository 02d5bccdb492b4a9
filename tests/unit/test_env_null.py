"""``null`` in a QROUTE_* variable is the documented null of the setting, as in the file:
it turns a nullable setting off, rather than being refused (an integer or boolean field)
or taken as the literal text "null" (a label, a file name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qroute.config import load_settings


def test_null_from_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "qroute.yaml"
    config.write_text(
        "server:\n  metrics_port: 9200\n  reflection: true\n"
        "table:\n  none_label: oos\n"
        "store:\n  shard_number: 2\n"
        "lexical:\n  min_query_idf: 1.0\n",
        encoding="utf-8",
    )
    for name in (
        "SERVER__METRICS_PORT",
        "SERVER__REFLECTION",
        "TABLE__NONE_LABEL",
        "STORE__SHARD_NUMBER",
        "LEXICAL__MIN_QUERY_IDF",
        "SHADOW__CONFIG",
        "CLIENT__ADDRESS",
    ):
        monkeypatch.setenv(f"QROUTE_{name}", "null")
    settings = load_settings(config)
    assert settings.server.metrics_port is None
    assert settings.server.reflection is None
    assert settings.table.none_label is None
    assert settings.store.shard_number is None
    assert settings.lexical.min_query_idf is None
    assert settings.shadow.config is None
    assert settings.client.address is None


def test_other_text_is_still_taken_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./qroute.yaml
    monkeypatch.setenv("QROUTE_TABLE__NONE_LABEL", "none")
    monkeypatch.setenv("QROUTE_ENCODER__PROMPT", "query: ")
    settings = load_settings(None)
    assert settings.table.none_label == "none"
    assert settings.encoder.prompt == "query: "
