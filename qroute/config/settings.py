"""The whole configuration: every section, the restart-only rule, and loading a file plus
the environment."""

from __future__ import annotations

import hashlib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from qroute.config.data import IndexSettings, StoreSettings, TableSettings
from qroute.config.learning import ReviewSettings, ShadowSettings
from qroute.config.models import EncoderSettings, LexicalSettings, NLISettings
from qroute.config.routing import (
    BatchingSettings,
    RetrievalSettings,
    RouterSettings,
    TunedSettings,
    ZeroShotSettings,
)
from qroute.config.serving import ClientSettings, ServerSettings
from qroute.configfile import config_file, read_config_file
from qroute.errors import ConfigError

# Restart-only: the sections and fields a hot reload keeps at their running values.
RESTART_ONLY = ("encoder", "nli", "lexical", "store", "batching", "review", "shadow")
RESTART_ONLY_SERVER = (
    "bind",
    "metrics_port",
    "metrics_host",
    "tls",
    "auth",
    "reflection",
    "tracing",
    "workers",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QROUTE_",
        env_nested_delimiter="__",
        # QROUTE_SERVER__METRICS_PORT=null is the file's `metrics_port: null` (off), not
        # an unparseable integer, nor the text "null" where the field takes text.
        env_parse_none_str="null",
        extra="forbid",
        frozen=True,
    )

    retrieval: RetrievalSettings = RetrievalSettings()
    encoder: EncoderSettings = EncoderSettings()
    lexical: LexicalSettings = LexicalSettings()
    nli: NLISettings = NLISettings()
    zero_shot: ZeroShotSettings = ZeroShotSettings()
    router: RouterSettings = RouterSettings()
    store: StoreSettings = StoreSettings()
    table: TableSettings = TableSettings()
    index: IndexSettings = IndexSettings()
    server: ServerSettings = ServerSettings()
    batching: BatchingSettings = BatchingSettings()
    client: ClientSettings = ClientSettings()
    review: ReviewSettings = ReviewSettings()
    shadow: ShadowSettings = ShadowSettings()
    tuned: TunedSettings | None = None

    # Whether zero_shot.method was given (file, environment or arguments) rather than
    # derived from retrieval.mode: a reload that keeps the running mode must derive it
    # again under that mode (see reloaded).
    _zero_shot_method_chosen: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _lexical_needs_no_model(
        cls, data: Any, handler: ModelWrapValidatorHandler[Settings]
    ) -> Settings:
        # Lexical mode is the one that runs with no model at all: unless a zero-shot
        # method is chosen, it has none (the default NLI model would need a download).
        chosen = True
        if isinstance(data, dict):
            retrieval, zero_shot = data.get("retrieval"), data.get("zero_shot")
            mode = retrieval.get("mode") if isinstance(retrieval, dict) else None
            method = zero_shot.get("method") if isinstance(zero_shot, dict) else None
            chosen = method is not None or not (zero_shot is None or isinstance(zero_shot, dict))
            if mode == "lexical" and not chosen:
                data = {**data, "zero_shot": {**(zero_shot or {}), "method": "off"}}
        settings = handler(data)
        settings._zero_shot_method_chosen = chosen
        return settings

    @model_validator(mode="after")
    def _embedding_needs_encoder(self) -> Settings:
        if self.retrieval.mode == "lexical" and self.zero_shot.method == "embedding":
            raise ValueError(
                "zero_shot.method 'embedding' needs the sentence encoder, which "
                "retrieval.mode 'lexical' does not load: use 'nli', 'off', or mode 'hybrid'"
            )
        return self

    @property
    def client_address(self) -> str:
        """The address a client dials: ``client.address``, else ``server.bind`` with a
        wildcard host (``0.0.0.0``, ``[::]``) replaced by the matching loopback."""
        if self.client.address:
            return self.client.address
        host, _, port = self.server.bind.rpartition(":")
        loopback = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}
        return f"{loopback.get(host, host)}:{port}"

    @property
    def version(self) -> str:
        """A short digest of every setting: equal settings, equal version."""
        digest = hashlib.sha256(self.model_dump_json().encode("utf-8")).hexdigest()
        return digest[:12]

    def reloaded(self, new: Settings) -> tuple[Settings, list[str]]:
        """What a hot reload to ``new`` runs: ``new`` with every restart-only value kept
        from these running settings, and the names of those that ``new`` would have
        changed (they take effect at the next restart)."""
        kept = [
            section for section in RESTART_ONLY if getattr(self, section) != getattr(new, section)
        ]
        update: dict[str, Any] = {section: getattr(self, section) for section in RESTART_ONLY}
        if self.retrieval.mode != new.retrieval.mode:
            kept.append("retrieval.mode")
            update["zero_shot"] = self._zero_shot_under_running_mode(new, kept)
        update["retrieval"] = new.retrieval.model_copy(update={"mode": self.retrieval.mode})
        server_fields = {name: getattr(self.server, name) for name in RESTART_ONLY_SERVER}
        kept += [
            f"server.{name}"
            for name, value in server_fields.items()
            if getattr(new.server, name) != value
        ]
        update["server"] = new.server.model_copy(update=server_fields)
        return new.model_copy(update=update), kept

    def _zero_shot_under_running_mode(self, new: Settings, kept: list[str]) -> ZeroShotSettings:
        # new's zero-shot method may be derived from its own retrieval.mode, which the
        # reload does not apply: derive it from the running mode instead, or the router
        # would switch its fallback on (loading the NLI model) or off unasked.
        zero_shot = new.zero_shot
        if not new._zero_shot_method_chosen:
            method = (
                "off"
                if self.retrieval.mode == "lexical"
                else ZeroShotSettings.model_fields["method"].default
            )
            zero_shot = zero_shot.model_copy(update={"method": method})
        if self.retrieval.mode == "lexical" and zero_shot.method == "embedding":
            # Refused at start (no sentence encoder in lexical mode): it waits for the
            # restart that applies the new mode.
            kept.append("zero_shot.method")
            zero_shot = zero_shot.model_copy(update={"method": self.zero_shot.method})
        return zero_shot

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


ENV_PREFIX = "QROUTE_"


def _section_keys() -> dict[str, set[str]]:
    """Each section's name and its keys (lower case, as the environment is read)."""
    keys: dict[str, set[str]] = {}
    for name, field in Settings.model_fields.items():
        # tuned is `TunedSettings | None`: the section is the model in the union.
        models = [field.annotation, *typing.get_args(field.annotation)]
        section = next(m for m in models if isinstance(m, type) and issubclass(m, BaseModel))
        keys[name] = set(section.model_fields)
    return keys


def _misspelt_environment(environ: Mapping[str, str]) -> str | None:
    """The first QROUTE_* variable that looks meant as a setting but names none, with
    the spelling it needs; pydantic-settings would ignore it, and the process would run
    without it. Variables that name no section and have no ``__`` are left alone: other
    tools set QROUTE_* names too (Kubernetes' QROUTE_SERVICE_HOST for a Service named
    qroute), and QROUTE_CONFIG is the config file's."""
    sections = _section_keys()
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :].lower()
        if "__" in rest:
            section = rest.split("__", 1)[0]
            if section not in sections:
                return (
                    f"environment variable {variable}: there is no section {section!r} "
                    f"(QROUTE_<SECTION>__<KEY>, sections: {', '.join(sections)})"
                )
            continue
        for section, keys in sections.items():
            key = rest.removeprefix(f"{section}_")
            if key != rest and key in keys:
                right = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
                return (
                    f"environment variable {variable} sets nothing: a key of a section "
                    f"takes two underscores, {right} (for {section}.{key})"
                )
    return None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$QROUTE_CONFIG``, or ``./qroute.yaml`` when it
    exists), then apply ``QROUTE_*`` environment variables.

    ``overrides`` are merged into the file's top-level sections before validation
    (used by tests and the CLI). Raises ConfigError naming the file and each bad field.
    """
    misspelt = _misspelt_environment(os.environ)
    if misspelt is not None:
        raise ConfigError(misspelt)
    file_path = config_file(path)
    data: dict[str, Any] = {}
    if file_path is not None:
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
