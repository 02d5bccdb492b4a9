"""A QROUTE_* variable meant as a setting but misspelt (one underscore before the key, or a
section that does not exist) is refused, naming it, as an unknown key in the file is: it
used to be ignored, so the router ran without it (QROUTE_RETRIEVAL_MODE=lexical: a dense
router trying to download the encoder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qroute.config import load_settings
from qroute.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("QROUTE_RETRIEVAL_MODE", "QROUTE_RETRIEVAL__MODE"),
        ("QROUTE_encoder_model", "QROUTE_ENCODER__MODEL"),
        ("QROUTE_ROUTR__K", "routr"),
        ("QROUTE_SERVER_TLS__CERT_FILE", "server_tls"),
    ],
)
def test_a_misspelt_setting_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, hint: str
) -> None:
    monkeypatch.setenv(name, "lexical")
    with pytest.raises(ConfigError, match=name) as caught:
        load_settings(None)
    assert hint in str(caught.value)


def test_other_qroute_variables_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kubernetes' service links for a Service named qroute, and the config file's own.
    monkeypatch.setenv("QROUTE_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("QROUTE_PORT_50051_TCP", "tcp://10.0.0.1:50051")
    monkeypatch.setenv("QROUTE_ROUTER_SERVICE_PORT", "50051")
    monkeypatch.setenv("QROUTE_CONFIG", "")
    monkeypatch.setenv("QROUTE_RETRIEVAL__MODE", "lexical")
    assert load_settings(None).retrieval.mode == "lexical"
