"""The data sections: where the index lives, how the table is read, what the indexer writes."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from qroute.config.section import Section


class StoreSettings(Section):
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
    # Both stores: the HNSW search beam of every dense search (larger: better recall,
    # slower); None: Qdrant's default. Sparse (lexical) searches have no graph.
    hnsw_ef: int | None = Field(None, ge=1)

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


class TableSettings(Section):
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
    # The label that marks out-of-scope rows (e.g. "oos"): they are indexed so the head
    # learns a none class, but it never votes and is never answered: a query whose head
    # picks it is NO_MATCH (no fallback). None: every label is a label.
    none_label: str | None = None


class IndexSettings(Section):
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
