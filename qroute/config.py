"""Settings: ``qroute.yaml`` overridden by ``QROUTE_*`` environment variables.

Nested fields use ``__`` in the environment: ``QROUTE_ENCODER__MODEL=/models/ko-sroberta``,
``QROUTE_STORE__LOCATION=http://qdrant:6333``. Precedence: environment > file > defaults.

A model is a Hugging Face hub id or a local directory. The store location is a local
directory (embedded Qdrant Edge, one process at a time per version) or an
``http(s)://`` URL of a Qdrant server or cluster.

Hot-reloadable: ``router.*``, ``zero_shot.*``, ``retrieval.*`` but ``mode``,
``server.index_poll_s``/``config_poll_s``/``shutdown_grace_s``. Restart-only:
``retrieval.mode``, ``encoder.*``, ``lexical.*``, ``nli.*``, ``store.*``, ``batching.*``,
``review.*``, ``shadow.*``,
``server.bind`` and ``server.metrics_port``/``metrics_host``; a reload that changes them
keeps the running values and says so (``Settings.reloaded`` is the one place that decides).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from qroute.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "BatchingSettings",
    "ClientSettings",
    "EncoderSettings",
    "IndexSettings",
    "LexicalSettings",
    "NLISettings",
    "RetrievalSettings",
    "ReviewSettings",
    "RouterSettings",
    "ServerSettings",
    "Settings",
    "ShadowSettings",
    "StoreSettings",
    "TableSettings",
    "TunedSettings",
    "ZeroShotSettings",
    "config_file",
    "load_settings",
]

DEFAULT_CONFIG_FILE = "qroute.yaml"
# Restart-only: the sections and fields a hot reload keeps at their running values.
RESTART_ONLY = ("encoder", "nli", "lexical", "store", "batching", "review", "shadow")
RESTART_ONLY_SERVER = ("bind", "metrics_port", "metrics_host")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderSettings(_Section):
    model: str = "jhgan/ko-sroberta-multitask"
    device: str = "cpu"
    batch_size: int = Field(64, ge=1, le=4096)
    # e5-style models expect a prefix ("query: "); it is applied to table rows
    # and queries alike, since both are queries.
    prompt: str = ""


class LexicalSettings(_Section):
    """Character n-gram sparse vectors (restart-only: an index is built with them)."""

    ngram_min: int = Field(1, ge=1, le=10)
    ngram_max: int = Field(3, ge=1, le=10)
    # n-grams within words (each padded with a space), or across the whole text.
    word_boundaries: bool = True
    # Decompose Hangul syllables into jamo first: a one-jamo typo or a dropped 받침
    # then changes a few terms, not the whole syllable's (use larger n-grams with it).
    jamo: bool = False
    # Terms are hashed into this many dimensions.
    dimensions: int = Field(2**20, ge=1024, le=2**31)

    @model_validator(mode="after")
    def _range(self) -> LexicalSettings:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) > ngram_max ({self.ngram_max})")
        return self


class RetrievalSettings(_Section):
    """Which similarity finds the neighbours. ``mode`` is restart-only (it decides which
    models load and which vectors the indexer writes); the rest is hot-reloadable."""

    # dense: the sentence encoder; lexical: character n-grams, no model at all;
    # hybrid: both, fused.
    mode: Literal["dense", "lexical", "hybrid"] = "dense"
    # hybrid: how candidates are ranked. blend: by the hybrid similarity below; rrf:
    # Qdrant's reciprocal rank fusion of the two candidate lists. Either way thresholds
    # and the vote use the hybrid similarity, never a fused rank score.
    fusion: Literal["blend", "rrf"] = "blend"
    # hybrid similarity = dense_weight * dense cosine + (1 - dense_weight) * lexical cosine.
    # 0.8: chosen by cross-validation on ParaKQC, never on the evaluation rows (see
    # bench/RESULTS.md, retrieval modes); a lexical cosine spreads wider than a dense one.
    dense_weight: float = Field(0.8, ge=0.0, le=1.0)
    # hybrid: examples fetched from each side before fusing.
    candidates: int = Field(32, ge=1, le=4096)


class NLISettings(_Section):
    """The NLI cross-encoder behind the ``nli`` zero-shot method (restart-only)."""

    model: str = "Huffon/klue-roberta-base-nli"
    device: str = "cpu"
    max_length: int = Field(128, ge=8, le=4096)
    # int8: dynamic int8 quantisation of the linear layers on CPU, for faster (bench/RESULTS.md)
    # zero-shot scoring; check its accuracy on your data (`qroute eval`) before use.
    quantize: Literal["none", "int8"] = "none"


class ZeroShotSettings(_Section):
    """How the router decides when the neighbours are not enough (hot-reloadable)."""

    # nli: NLI entailment of a hypothesis per label; embedding: similarity of the
    # query to each label's description under the same encoder; off: never.
    method: Literal["nli", "embedding", "off"] = "nli"
    # independent: entailment vs contradiction per label, so it can say "none of
    # these"; single: softmax of entailment logits across labels, always picks one.
    mode: Literal["independent", "single"] = "independent"
    template: str = "이 문장은 {label}에 관한 것입니다."
    # A bare label name is often a poor hypothesis: {label} is filled with the
    # description where one is given (금융: "주식, 환율, 금리 같은 금융").
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    # Score needed for a ZERO_SHOT answer, else NO_MATCH: entailment probability
    # (nli, independent mode) or cosine similarity (embedding).
    threshold: float = Field(0.5, ge=-1.0, le=1.0)
    # Which labels are scored: the best `top_n` of the kNN vote, or every label.
    candidates: Literal["vote", "all"] = "vote"
    top_n: int = Field(5, ge=1, le=1000)

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

    def hypothesis(self, label: str) -> str:
        return self.template.format(label=self.label_descriptions.get(label, label))


class RouterSettings(_Section):
    """The kNN vote and when to leave it (hot-reloadable)."""

    # Labels fetched per query (Qdrant groups), each with its best `group_size` examples.
    k: int = Field(10, ge=1, le=1000)
    group_size: int = Field(3, ge=1, le=100)
    # A label's score from its best neighbours' similarities: "max", "mean" (of the
    # best group_size), or "max_mean" (their average).
    label_score: Literal["max", "mean", "max_mean"] = "max_mean"
    # Cosine similarity the winning label's best neighbour must reach; per-label overrides.
    similarity_threshold: float = Field(0.8, ge=-1.0, le=1.0)
    label_thresholds: dict[str, float] = Field(default_factory=dict)
    # Leave kNN when the first and second label scores are closer than this.
    min_margin: float = Field(0.0, ge=0.0, le=2.0)
    # Leave kNN when fewer of the winner's neighbours reach its similarity threshold.
    min_agreeing: int = Field(1, ge=1, le=100)
    # Softmax temperature turning label scores into the KNN confidence.
    vote_temperature: float = Field(0.05, gt=0.0, le=10.0)
    # Let the index's linear head (``index.head``) pick the label, where it has one;
    # the neighbours still gate and explain the answer. False: the vote always picks.
    use_head: bool = True
    max_text_chars: int = Field(1000, ge=1)
    # Texts one ClassifyBatch may carry; more is INVALID_ARGUMENT (never queued). The
    # batcher's queue (batching.max_queue) caps it too: a larger batch could never fit.
    max_batch_texts: int = Field(256, ge=1)
    # Labels one request's allowed_labels may list; more is INVALID_ARGUMENT.
    max_allowed_labels: int = Field(1000, ge=1)

    @field_validator("label_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for label, threshold in value.items():
            if not -1.0 <= threshold <= 1.0:
                raise ValueError(f"{label}: {threshold} is not a cosine similarity in [-1, 1]")
        return value

    @model_validator(mode="after")
    def _agreeing_fits_group(self) -> RouterSettings:
        if self.min_agreeing > self.group_size:
            raise ValueError(
                f"min_agreeing ({self.min_agreeing}) cannot exceed group_size ({self.group_size}): "
                "only a label's best group_size neighbours are fetched"
            )
        return self

    def threshold_for(self, label: str) -> float:
        return self.label_thresholds.get(label, self.similarity_threshold)


class StoreSettings(_Section):
    # A local directory (embedded store) or an http(s):// URL (Qdrant server).
    location: str = ".qroute/qdrant"
    collection: str = Field("qroute", pattern=r"^[A-Za-z0-9_]+$")
    api_key: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)
    # Server store: talk gRPC (on grpc_port) rather than REST (on the URL's port,
    # 6333 when the URL names none).
    prefer_grpc: bool = True
    grpc_port: int = Field(6334, ge=1, le=65535)
    # Server store, Qdrant distributed mode (docs/deploy.md). None: Qdrant's own default.
    # Shards per version collection, and copies of each shard: read when the indexer
    # creates a version, so a change applies to the next version it writes.
    shard_number: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    # Replicas that must acknowledge a write before it succeeds; <= replication_factor.
    write_consistency_factor: int | None = Field(None, ge=1)
    # Replicas a search asks: majority, quorum, all, or a number (Qdrant's default: 1).
    read_consistency: Annotated[int, Field(ge=1)] | Literal["majority", "quorum", "all"] | None = (
        None
    )

    @model_validator(mode="after")
    def _write_consistency_fits(self) -> StoreSettings:
        writes, copies = self.write_consistency_factor, self.replication_factor
        if writes is not None and copies is not None and writes > copies:
            raise ValueError(
                f"write_consistency_factor ({writes}) cannot exceed "
                f"replication_factor ({copies}): a write would never be acknowledged"
            )
        return self

    @property
    def is_server(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    @property
    def endpoint(self) -> str:
        """host:port the server store dials, and over what (for error messages)."""
        url = urlsplit(self.location)
        if self.prefer_grpc:
            return f"{url.hostname}:{self.grpc_port} (gRPC, store.grpc_port)"
        return f"{url.hostname}:{url.port or 6333} (REST, the port of store.location)"


Policy = Literal["error", "skip", "warn"]


class TableSettings(_Section):
    """Reading and validating the labelled table (used by the indexer)."""

    text_column: str = "text"
    label_column: str = "label"
    # None: UTF-8 (with or without BOM) when the file decodes as such, else CP949
    # (a superset of EUC-KR, what Excel writes for Korean).
    encoding: str | None = None
    max_text_chars: int = Field(1000, ge=1)
    min_examples: int = Field(1, ge=1)
    # What each problem does: error (stop, write nothing), skip (drop the row), warn (keep it).
    on_empty_text: Policy = "error"
    on_missing_label: Policy = "error"
    on_too_long: Policy = "error"
    on_duplicate: Policy = "skip"
    on_conflicting_labels: Policy = "error"
    on_rare_label: Policy = "warn"


class IndexSettings(_Section):
    """The indexing job (restart-free: the indexer reads it on every run)."""

    # Published versions kept, the live one included; older ones are dropped.
    keep_versions: int = Field(3, ge=1)
    # Rows encoded and written per step; encoding of the next step overlaps the write.
    write_batch: int = Field(512, ge=1)
    # Rows per label that must find their own label before the alias moves.
    canary_per_label: int = Field(3, ge=0)
    # With --holdout: the new version's accuracy may trail the live one's by this much.
    holdout_tolerance: float = Field(0.01, ge=0.0, le=1.0)
    # Fit a linear head (logistic regression over the version's own dense and n-gram
    # vectors) and store it with the version: the router's label picker (router.use_head).
    head: bool = False
    # The head's inverse L2 penalty (scikit-learn's C).
    head_c: float = Field(3.0, gt=0.0)


class TunedSettings(_Section):
    """Written by ``qroute tune``: what the thresholds were tuned on and what they reached.
    The router warns at start when its encoder is not the one they were tuned with."""

    encoder: str = ""
    index_version: str = ""
    objective: str = ""
    data: str = ""
    at: str = ""
    figures: dict[str, float | None] = Field(default_factory=dict)


class ServerSettings(_Section):
    bind: str = "127.0.0.1:50051"
    # How often the router looks for a newly published index version, and for a
    # changed config file.
    index_poll_s: float = Field(2.0, gt=0)
    config_poll_s: float = Field(2.0, gt=0)
    # Prometheus metrics over HTTP on this port (0: any free port; null: off).
    metrics_port: int | None = Field(9100, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # On SIGTERM/SIGINT: health turns NOT_SERVING, new calls are refused (UNAVAILABLE),
    # and accepted ones get this long to finish before they are cancelled.
    shutdown_grace_s: float = Field(5.0, ge=0)


class ClientSettings(_Section):
    """How ``qroute classify`` and ``qroute health`` reach a router (read per run; the
    router itself never uses them)."""

    # host:port to dial; null: the router's own server.bind (0.0.0.0 / [::] dial loopback).
    address: str | None = None
    # TLS: verified against ca_file, else the system's roots. cert_file + key_file: mTLS.
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Sent as `authorization: Bearer <token>` on every call.
    token: SecretStr | None = None
    # Default deadline of a classify call, retries on UNAVAILABLE included.
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _key_pair(self) -> ClientSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client's mTLS pair)")
        return self


class BatchingSettings(_Section):
    """Concurrent Classify calls are gathered into one model call (restart-only)."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    # Waiting for more requests only helps when they arrive while the models are idle;
    # under load the next batch forms while the current one runs. 0 adds no latency.
    max_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    # Requests waiting beyond this are refused (RESOURCE_EXHAUSTED) rather than queued.
    max_queue: int = Field(1024, ge=1)


class ReviewSettings(_Section):
    """The review queue: answers worth a human look, and caller feedback, in SQLite
    (restart-only; docs/review.md)."""

    enabled: bool = False
    path: str = ".qroute/review.sqlite"
    # Fraction of the answers that qualify (NO_MATCH, ZERO_SHOT, low confidence, shadow
    # disagreement) that is recorded. Feedback is always recorded.
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    # Also record answers whose confidence is below this (0: none for this reason).
    confidence_below: float = Field(0.0, ge=0.0, le=1.0)
    # Rows waiting for review (pending) kept; the oldest are dropped beyond it. Reviewed
    # (accepted, rejected) rows are kept: they are the curated data.
    max_rows: int = Field(100_000, ge=1)
    # What a row keeps of the query text: full, hash (sha256 hex of the normalised
    # text), none. Only full rows can be exported as labelled examples.
    store_texts: Literal["full", "hash", "none"] = "full"
    # Records waiting for the writer; beyond it they are dropped and counted, so a slow
    # disk never holds a request back.
    max_queue: int = Field(1024, ge=1)
    # Recent answers remembered in memory so that feedback may name a request_id alone.
    remember_requests: int = Field(10_000, ge=0)


class ShadowSettings(_Section):
    """Shadow evaluation of a candidate config on live traffic, after the live answer
    is sent (restart-only; docs/review.md)."""

    # A candidate config file (its hot-reloadable sections: thresholds, zero-shot,
    # retrieval weights); null: no shadow evaluation.
    config: str | None = None
    # A published (kept) index version the candidate searches instead of the live one
    # (`qroute index --list`); null: the live version. Either or both may be set.
    index_version: str | None = None
    # Fraction of the live requests the candidate also answers.
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    # Requests waiting for the candidate; beyond it they are dropped and counted.
    max_queue: int = Field(256, ge=1)
    # Texts the candidate classifies per call.
    max_batch: int = Field(32, ge=1, le=4096)
    # `qroute shadow report`: agreement the candidate needs to be promoted.
    min_agreement: float = Field(0.9, ge=0.0, le=1.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QROUTE_", env_nested_delimiter="__", extra="forbid", frozen=True
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

    @model_validator(mode="before")
    @classmethod
    def _lexical_needs_no_model(cls, data: Any) -> Any:
        # Lexical mode is the one that runs with no model at all: unless a zero-shot
        # method is chosen, it has none (the default NLI model would need a download).
        if not isinstance(data, dict):
            return data
        retrieval, zero_shot = data.get("retrieval"), data.get("zero_shot")
        mode = retrieval.get("mode") if isinstance(retrieval, dict) else None
        chosen = zero_shot.get("method") if isinstance(zero_shot, dict) else None
        if (
            mode == "lexical"
            and chosen is None
            and (zero_shot is None or isinstance(zero_shot, dict))
        ):
            data = {**data, "zero_shot": {**(zero_shot or {}), "method": "off"}}
        return data

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
        update["retrieval"] = new.retrieval.model_copy(update={"mode": self.retrieval.mode})
        server_fields = {name: getattr(self.server, name) for name in RESTART_ONLY_SERVER}
        kept += [
            f"server.{name}"
            for name, value in server_fields.items()
            if getattr(new.server, name) != value
        ]
        update["server"] = new.server.model_copy(update=server_fields)
        return new.model_copy(update=update), kept

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


def _duplicate_key(node: Any, where: str = "") -> tuple[str, int, int] | None:
    """The first key that a YAML mapping repeats: (dotted key, first line, second line)."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            name = f"{where}.{key.value}" if where else str(key.value)
            if key.value in first:
                return name, first[key.value], key.start_mark.line + 1
            first[key.value] = key.start_mark.line + 1
            found = _duplicate_key(value, name)
            if found:
                return found
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            found = _duplicate_key(item, f"{where}.{index}")
            if found:
                return found
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping; raises ConfigError naming the file.

    YAML 1.2 (ruamel.yaml, which also writes the file in ``qroute tune --write``): ``no``,
    ``off`` and ``yes`` are strings, as label names and ``zero_shot.method: off`` need.
    A key given twice is an error, not the last value silently winning.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}): point --config or QROUTE_CONFIG at the YAML config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    yaml = YAML(typ="safe", pure=True)
    try:
        data = yaml.load(text)
    except DuplicateKeyError:
        found = _duplicate_key(yaml.compose(text))
        assert found is not None
        key, first, second = found
        raise ConfigError(
            f"config file {path}: {key} is set twice, on line {first} and line {second}: keep one"
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = " ".join(filter(None, (exc.context, exc.problem)))
        raise ConfigError(f"config file {path}{at} is not valid YAML: {problem}") from None
    except YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def config_file(path: str | Path | None = None) -> Path | None:
    """The config file in use: ``path``, else ``$QROUTE_CONFIG``, else ``./qroute.yaml``
    when it exists, else None (defaults and environment only)."""
    explicit = path if path is not None else os.environ.get("QROUTE_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$QROUTE_CONFIG``, or ``./qroute.yaml`` when it
    exists), then apply ``QROUTE_*`` environment variables.

    ``overrides`` are merged into the file's top-level sections before validation
    (used by tests and the CLI). Raises ConfigError naming the file and each bad field.
    """
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
