"""Index a labelled table into a new version of the collection, then publish it.

Order of work, so a failure never touches what is served: validate the whole
table (nothing is written if a row is bad) -> create an unpublished version ->
embed and write in batches -> check the point count -> publish (atomic pointer
switch) -> drop the version it replaced. A failure before publishing drops the
half-written version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from qroute.config import Settings
from qroute.encoder import Encoder, SentenceTransformerEncoder
from qroute.errors import IndexWriteError
from qroute.store import Point, VectorStore, open_store
from qroute.table import read_table
from qroute.types import Example

__all__ = ["IndexReport", "run_index"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexReport:
    version: str
    previous: str | None
    rows: int
    labels: tuple[str, ...]


def _payload(example: Example) -> dict[str, object]:
    return {
        "text": example.text,
        "label": example.label,
        "row_id": example.row_id,
        "source": Path(example.source).name,
        "row": example.line,
    }


async def _write(
    store: VectorStore,
    version: str,
    encoder: Encoder,
    examples: Sequence[Example],
    batch: int,
    progress: bool,
) -> None:
    with tqdm(
        total=len(examples), unit="row", desc=f"indexing {version}", disable=not progress
    ) as bar:
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            vectors = await asyncio.to_thread(encoder.encode, [e.text for e in chunk])
            points = [
                Point(e.row_id, v.tolist(), _payload(e))
                for e, v in zip(chunk, vectors, strict=True)
            ]
            await store.upsert(version, points)
            bar.update(len(chunk))


async def run_index(
    settings: Settings,
    table: str | Path,
    *,
    encoder: Encoder | None = None,
    store: VectorStore | None = None,
    progress: bool = True,
) -> IndexReport:
    """Index ``table`` and publish it. Raises TableError (nothing written),
    ModelLoadError, StoreUnavailable or IndexWriteError (nothing published)."""
    examples = read_table(table, settings.table)
    labels = tuple(sorted({e.label for e in examples}))
    encoder = encoder or SentenceTransformerEncoder(settings.encoder)
    own_store = store is None
    store = store or open_store(settings.store)
    try:
        metadata = {
            "encoder": encoder.fingerprint,
            "dimension": encoder.dimension,
            "labels": list(labels),
            "rows": len(examples),
            "table": str(table),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        version = await store.create_version(encoder.dimension, metadata)
        try:
            await _write(
                store, version, encoder, examples, settings.encoder.batch_size * 4, progress
            )
            written = await store.count(version)
            if written != len(examples):
                raise IndexWriteError(
                    f"version {version} holds {written} points after writing {len(examples)} rows"
                )
            previous = await store.publish(version)
        except BaseException:
            await store.drop(version)
            raise
        log.info("published %s (%d rows, %d labels)", version, len(examples), len(labels))
        if previous is not None:
            await store.drop(previous)
        return IndexReport(version=version, previous=previous, rows=len(examples), labels=labels)
    finally:
        if own_store:
            await store.close()
