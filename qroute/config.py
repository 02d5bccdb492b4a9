"""Settings: ``qroute.yaml`` overridden by ``QROUTE_*`` environment variables.

Nested fields use ``__`` in the environment: ``QROUTE_ENCODER__MODEL=/models/ko-sroberta``,
``QROUTE_STORE__LOCATION=http://qdrant:6333``. Precedence: environment > file > defaults.

A model is a Hugging Face hub id or a local directory. The store location is a local
directory (embedded Qdrant Edge, one process at a time per version) or an
``http(s)://`` URL of a Qdrant server or cluster.

Restart-only fields: ``encoder.*``, ``nli.model``, ``store.*``, ``server.bind``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from qroute.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "EncoderSettings",
    "NLISettings",
    "RouterSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "TableSettings",
    "load_settings",
]

DEFAULT_CONFIG_FILE = "qroute.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderSettings(_Section):
    model: str = "jhgan/ko-sroberta-multitask"
    device: str = "cpu"
    batch_size: int = Field(64, ge=1, le=4096)
    # e5-style models expect a prefix ("query: "); it is applied to table rows
    # and queries alike, since both are queries.
    prompt: str = ""


class NLISettings(_Section):
    model: str = "Huffon/klue-roberta-base-nli"
    device: str = "cpu"
    template: str = "이 문장은 {label}에 관한 것입니다."
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    # "neighbours": score only the labels among the k neighbours; "all": every label.
    candidates: Literal["neighbours", "all"] = "neighbours"
    max_length: int = Field(128, ge=8, le=4096)

    @field_validator("template")
    @classmethod
    def _has_label_slot(cls, value: str) -> str:
        try:
            rendered = value.format(label="\0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template must only use the {{label}} placeholder: {exc!r}") from exc
        if "\0" not in rendered:
            raise ValueError("template must contain the {label} placeholder")
        return value


class RouterSettings(_Section):
    k: int = Field(10, ge=1, le=1000)
    # Cosine similarity the best neighbour must reach for a kNN answer.
    similarity_threshold: float = Field(0.8, ge=-1.0, le=1.0)
    # Softmax temperature of the similarity-weighted vote (see qroute.vote.vote).
    vote_temperature: float = Field(0.05, gt=0.0, le=10.0)
    max_text_chars: int = Field(1000, ge=1)


class StoreSettings(_Section):
    # A local directory (embedded store) or an http(s):// URL (Qdrant server).
    location: str = ".qroute/qdrant"
    collection: str = Field("qroute", pattern=r"^[A-Za-z0-9_]+$")
    api_key: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)

    @property
    def is_server(self) -> bool:
        return self.location.startswith(("http://", "https://"))


class TableSettings(_Section):
    text_column: str = "text"
    label_column: str = "label"


class ServerSettings(_Section):
    bind: str = "127.0.0.1:50051"
    # How often the router looks for a newly published index version.
    index_poll_s: float = Field(2.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QROUTE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    encoder: EncoderSettings = EncoderSettings()
    nli: NLISettings = NLISettings()
    router: RouterSettings = RouterSettings()
    store: StoreSettings = StoreSettings()
    table: TableSettings = TableSettings()
    server: ServerSettings = ServerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs (see load_settings); the
        # environment must win over it.
        return env_settings, init_settings


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"  {field}: {err['msg']}")
    return f"invalid configuration ({source}):\n" + "\n".join(lines)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping; raises ConfigError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$QROUTE_CONFIG``, or ``./qroute.yaml`` when it
    exists), then apply ``QROUTE_*`` environment variables.

    ``overrides`` are merged into the file's top-level sections before validation
    (used by tests and the CLI). Raises ConfigError naming the file and each bad field.
    """
    explicit = path if path is not None else os.environ.get("QROUTE_CONFIG")
    file_path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if explicit or file_path.exists():
        data = read_config_file(file_path)
        source = f"{file_path} + QROUTE_* environment"
    else:
        source = "defaults + QROUTE_* environment"
    for section, values in overrides.items():
        merged = dict(data.get(section) or {})
        merged.update(values)
        data[section] = merged
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None
