from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from qroute.config import Settings, load_settings
from qroute.errors import ConfigError


def test_defaults_are_the_korean_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./qroute.yaml here
    settings = load_settings()
    assert settings.encoder.model == "jhgan/ko-sroberta-multitask"
    assert settings.nli.model == "Huffon/klue-roberta-base-nli"
    assert settings.zero_shot.template == "이 문장은 {label}에 관한 것입니다."
    assert not settings.store.is_server


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "qroute.yaml"
    path.write_text(
        "router:\n  k: 7\n  similarity_threshold: 0.6\nstore:\n  location: /data/q\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("QROUTE_ROUTER__K", "3")
    monkeypatch.setenv("QROUTE_STORE__LOCATION", "http://qdrant:6333")
    settings = load_settings(path)
    assert settings.router.k == 3  # environment wins
    assert settings.router.similarity_threshold == 0.6  # the rest of the section stays
    assert settings.store.is_server


def test_config_file_from_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("zero_shot:\n  threshold: 0.25\n", encoding="utf-8")
    monkeypatch.setenv("QROUTE_CONFIG", str(path))
    assert load_settings().zero_shot.threshold == 0.25


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("router:\n  k: 0\n", "router.k"),
        ("router:\n  similarity_threshold: 2\n", "router.similarity_threshold"),
        ("zero_shot:\n  template: '이 문장은 금융입니다'\n", "zero_shot.template"),
        ("zero_shot:\n  candidates: some\n", "zero_shot.candidates"),
        ("router:\n  group_size: 2\n  min_agreeing: 3\n", "router"),
        ("router:\n  label_thresholds: {금융: 1.5}\n", "router.label_thresholds"),
        ("store:\n  colection: x\n", "store.colection"),
        ("store:\n  collection: 'has space'\n", "store.collection"),
        # The second worker's metrics would be port 65536 (a traceback at its start).
        ("server:\n  metrics_port: 65535\n  workers: 2\n", "metrics_port 65535 + 2 workers"),
    ],
)
def test_bad_config_names_the_file_and_field(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "qroute.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)


def test_bad_environment_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QROUTE_ROUTER__K", "many")
    with pytest.raises(ConfigError, match=r"router\.k"):
        load_settings()


def test_unreadable_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "qroute.yaml"
    path.write_text("router: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


def test_retrieval_mode_and_ngrams_are_restart_only_but_fusion_reloads() -> None:
    old = Settings()
    assert old.reloaded(Settings(retrieval={"mode": "hybrid"}))[1] == ["retrieval.mode"]
    assert old.reloaded(Settings(lexical={"ngram_max": 4}))[1] == ["lexical"]
    assert old.reloaded(Settings(retrieval={"fusion": "rrf", "dense_weight": 0.3}))[1] == []


def test_a_reload_runs_the_new_settings_with_restart_only_values_kept() -> None:
    old = Settings()
    new = Settings(
        retrieval={"mode": "hybrid", "fusion": "rrf"},
        server={"bind": "0.0.0.0:1", "index_poll_s": 9.0},
        router={"k": 3},
    )
    running, kept = old.reloaded(new)
    assert kept == ["retrieval.mode", "server.bind"]
    assert running.retrieval.mode == old.retrieval.mode and running.retrieval.fusion == "rrf"
    assert running.server.bind == old.server.bind and running.server.index_poll_s == 9.0
    assert running.router.k == 3


def test_lexical_mode_turns_zero_shot_off_unless_a_method_is_chosen() -> None:
    assert Settings(retrieval={"mode": "lexical"}).zero_shot.method == "off"
    assert (
        Settings(retrieval={"mode": "lexical"}, zero_shot={"method": "nli"}).zero_shot.method
        == "nli"
    )
    assert Settings().zero_shot.method == "nli"
    with pytest.raises(ValidationError, match="needs the sentence encoder"):
        Settings(retrieval={"mode": "lexical"}, zero_shot={"method": "embedding"})


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "qroute.yaml"
    path.write_text(
        "router:\n  k: 3\n  group_size: 2\n  k: 5\nzero_shot:\n  threshold: 0.4\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"config file {path}: router.k is set twice, on line 2 and line 4: keep one"
    )


def test_yaml_1_1_booleans_are_strings(tmp_path: Path) -> None:
    """The README's ``method: off`` unquoted, and labels named like YAML 1.1 booleans."""
    path = tmp_path / "qroute.yaml"
    path.write_text(
        "zero_shot:\n  method: off\n"
        "router:\n  label_thresholds: {no: 0.5, yes: 0.6, on: 0.7, n: 0.2}\n",
        encoding="utf-8",
    )
    settings = load_settings(path)
    assert settings.zero_shot.method == "off"
    assert settings.router.label_thresholds == {"no": 0.5, "yes": 0.6, "on": 0.7, "n": 0.2}


def test_a_binary_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "qroute.yaml"
    path.write_bytes(b"\xfe\xff\x00\x01binary")
    with pytest.raises(ConfigError, match=rf"config file {path} is not UTF-8 text"):
        load_settings(path)


@pytest.mark.parametrize(
    ("bind", "address"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("0.0.0.0:7000", "127.0.0.1:7000"),
        ("[::]:7000", "[::1]:7000"),
        ("router.internal:7000", "router.internal:7000"),
    ],
)
def test_clients_dial_the_routers_bind_on_loopback_when_it_is_a_wildcard(
    bind: str, address: str
) -> None:
    assert Settings(server={"bind": bind}).client_address == address
    explicit = Settings(server={"bind": bind}, client={"address": "elsewhere:1"})
    assert explicit.client_address == "elsewhere:1"


def test_client_token_is_secret_and_the_mtls_pair_goes_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QROUTE_CLIENT__TOKEN", "s3cret")
    settings = load_settings()
    assert settings.client.token is not None
    assert settings.client.token.get_secret_value() == "s3cret"
    assert "s3cret" not in settings.model_dump_json()
    monkeypatch.setenv("QROUTE_CLIENT__CERT_FILE", "client.pem")
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_settings()
