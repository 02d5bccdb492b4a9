"""The index format: what a version records about itself and what each point carries.

The indexer writes both, the router and the tools read them, and both stores keep them
as given (the embedded store in ``qroute.json``, the server store in the collection's
metadata and the points' payloads). This module is the one place that knows their keys:
a renamed or missing key fails here, with the version named, not somewhere downstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from qroute.errors import IndexCorrupt
from qroute.types import Example, Hit

__all__ = [
    "LABEL_FIELD",
    "PAYLOAD_FIELDS",
    "IndexMetadata",
    "hit_from_payload",
    "to_payload",
]

# The payload field holding an example's label: indexed, and what groups are formed by.
LABEL_FIELD = "label"
# Fields every point's payload carries; a table's extra columns ride along beside them
# but never under these names.
PAYLOAD_FIELDS = frozenset({"text", LABEL_FIELD, "row_id", "file", "row"})


def to_payload(example: Example) -> dict[str, object]:
    """A point's payload: the example, where it came from, and its extra columns."""
    extra = {k: v for k, v in example.extra.items() if k not in PAYLOAD_FIELDS}
    return {
        **extra,
        "text": example.text,
        LABEL_FIELD: example.label,
        "row_id": example.row_id,
        "file": Path(example.source).name,
        "row": example.line,
    }


def hit_from_payload(point_id: object, score: float, payload: Mapping[str, Any] | None) -> Hit:
    """A search result from a point's id, score and payload."""
    payload = payload or {}
    return Hit(
        row_id=str(payload.get("row_id", point_id)),
        text=str(payload.get("text", "")),
        label=str(payload.get(LABEL_FIELD, "")),
        similarity=float(score),
    )


Retrieval = Literal["dense", "lexical", "hybrid"]


@dataclass(frozen=True)
class IndexMetadata:
    """What one index version records about itself.

    ``encoder``/``dimension``: the dense encoder's fingerprint and vector size (dense and
    hybrid); ``lexical``/``lexicon``: the n-gram settings' fingerprint and the document
    frequencies (lexical and hybrid); ``head``: the fitted linear head, if any. ``build``
    is ``full`` or ``incremental`` (on top of ``base``). ``replaces``: the version that
    was published when this one was built, which a rollback from it restores.
    """

    retrieval: Retrieval
    labels: tuple[str, ...]
    rows: int
    table: str
    build: Literal["full", "incremental"]
    created_at: str
    base: str | None = None
    replaces: str | None = None
    encoder: str | None = None
    dimension: int | None = None
    lexical: str | None = None
    lexicon: Mapping[str, Any] | None = field(default=None, repr=False)
    head: Mapping[str, Any] | None = field(default=None, repr=False)

    def with_head(self, head: Mapping[str, Any]) -> IndexMetadata:
        return replace(self, head=head)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "retrieval": self.retrieval,
            "labels": list(self.labels),
            "rows": self.rows,
            "table": self.table,
            "mode": self.build,
            "base": self.base,
            "created_at": self.created_at,
        }
        optional = {
            "replaces": self.replaces,
            "encoder": self.encoder,
            "dimension": self.dimension,
            "lexical": self.lexical,
            "lexicon": self.lexicon,
            "head": self.head,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: str) -> IndexMetadata:
        """Decode a version's metadata; IndexCorrupt names the version and the key
        that is missing or of the wrong type (a version written by another tool, or
        damaged)."""

        def get(key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
            if key not in data:
                if default is ...:
                    raise IndexCorrupt(
                        f"index version {version}'s metadata has no {key!r}: it was not "
                        "written by this qroute's indexer; re-index (`qroute index TABLE`)"
                    )
                return default
            value = data[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
                raise IndexCorrupt(
                    f"index version {version}'s metadata field {key!r} is "
                    f"{type(value).__name__}, not what the indexer writes; re-index"
                )
            return value

        labels = get("labels", list)
        # Versions written before the mode was recorded: from the vectors they hold.
        inferred = (
            ("hybrid" if "lexical" in data else "dense")
            if "encoder" in data
            else ("lexical" if "lexical" in data else "dense")
        )
        retrieval = get("retrieval", str, inferred)
        build = get("mode", str, "full")
        if retrieval not in ("dense", "lexical", "hybrid") or build not in ("full", "incremental"):
            raise IndexCorrupt(
                f"index version {version} records retrieval {retrieval!r}, build {build!r}: "
                "not a format this qroute reads; re-index"
            )
        return cls(
            retrieval=retrieval,
            labels=tuple(str(label) for label in labels),
            rows=get("rows", int, 0),
            table=get("table", str, ""),
            build=build,
            created_at=get("created_at", str, ""),
            base=get("base", (str, type(None)), None),
            replaces=get("replaces", str, None),
            encoder=get("encoder", str, None),
            dimension=get("dimension", int, None),
            lexical=get("lexical", str, None),
            lexicon=get("lexicon", dict, None),
            head=get("head", dict, None),
        )
