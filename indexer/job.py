"""Index a labelled table into a new version of the collection, gate it, publish it.

Order of work, so a failure never touches what is served: validate the whole table
(stream 1; nothing is written when a row breaks an ``error`` policy) -> lexical and
hybrid modes: count the character n-grams' document frequencies (stream 2, no model)
-> remove drafts left by crashed runs -> refuse a live version of another retrieval
mode (unless ``replace_mode``) -> create an unpublished version -> stream 3:
encode and write in
batches, encoding the next batch while the current one is written, and reusing the live
version's vectors for unchanged rows (incremental mode) -> with ``index.head``: fit the
linear head on the rows just written, into the version's metadata -> gates -> publish (atomic
pointer switch) -> drop published versions beyond ``index.keep_versions``. Any failure
before publishing drops the new version; a killed run leaves a draft that the next run
removes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qroute.config import Settings
from qroute.embedding.dense import Encoder
from qroute.embedding.lexical import Lexicon, morph_from
from qroute.errors import IndexWriteError
from qroute.routing.head import HeadData
from qroute.routing.retrieval import Embedded, Retriever
from qroute.store import Point, VectorStore, open_store
from qroute.store.metadata import IndexMetadata, to_payload
from qroute.table import TableReport, iter_examples, scan_table
from qroute.types import Example

from .gates import Canaries, Holdout, check_gates, read_holdout
from .versions import remove_drafts, retain

__all__ = ["IndexReport", "run_index"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexReport:
    version: str
    previous: str | None
    rows: int
    labels: tuple[str, ...]
    mode: str  # "full" or "incremental"
    embedded: int  # rows sent to the encoder
    reused: int  # rows whose vector came from the live version
    dropped: tuple[str, ...] = ()  # versions removed by the retention policy
    table: TableReport | None = field(default=None, compare=False)


def _lexicon(
    retriever: Retriever, report: TableReport, settings: Settings, progress: bool
) -> Lexicon:
    """Document frequencies over the distinct rows the version will hold."""
    lexical = retriever.lexical
    assert lexical is not None
    seen: set[str] = set()

    def documents() -> Iterator[Counter[int]]:
        with tqdm(
            total=report.accepted, unit="row", desc="counting terms", disable=not progress
        ) as bar:
            for chunk in iter_examples(report, settings.table, batch=settings.index.write_batch):
                for example in chunk:
                    if example.row_id not in seen:
                        seen.add(example.row_id)
                        yield lexical.terms(example.text)
                bar.update(len(chunk))

    return Lexicon.count(documents())


async def _write(
    store: VectorStore,
    version: str,
    retriever: Retriever,
    lexicon: Lexicon | None,
    report: TableReport,
    settings: Settings,
    live: str | None,
    canaries: Canaries,
    progress: bool,
    head: HeadData | None = None,
) -> tuple[int, int, int]:
    """Stream the accepted rows into ``version``: (distinct rows, embedded, reused)."""
    batches: asyncio.Queue[tuple[list[Example], Embedded] | None] = asyncio.Queue(maxsize=2)
    ids: set[str] = set()
    counts = {"embedded": 0, "reused": 0}
    encoder = retriever.encoder

    async def produce() -> None:
        for chunk in iter_examples(report, settings.table, batch=settings.index.write_batch):
            # Sparse vectors are always recomputed: their weights depend on the whole
            # table's document frequencies. They cost no model call.
            sparse = None
            if retriever.lexical is not None:
                assert lexicon is not None
                sparse = [lexicon.vector(retriever.lexical.terms(e.text)) for e in chunk]
            dense = None
            if encoder is not None:
                dense = await _dense(store, encoder, chunk, live, counts)
            embedded = Embedded(dense, sparse)
            canaries.offer(chunk, embedded)
            if head is not None:
                head.offer([e.row_id for e in chunk], [e.label for e in chunk], dense, sparse)
            await batches.put((chunk, embedded))
        await batches.put(None)

    producer = asyncio.create_task(produce())
    try:
        with tqdm(
            total=report.accepted, unit="row", desc=f"indexing {version}", disable=not progress
        ) as bar:
            while (item := await _next_batch(batches, producer)) is not None:
                chunk, embedded = item
                points = [
                    Point(
                        e.row_id,
                        embedded.dense[row].tolist() if embedded.dense is not None else [],
                        to_payload(e),
                        sparse=embedded.sparse[row] if embedded.sparse is not None else None,
                    )
                    for row, e in enumerate(chunk)
                ]
                await store.upsert(version, points)
                ids.update(e.row_id for e in chunk)
                bar.update(len(chunk))
        await producer
    finally:
        producer.cancel()
    return len(ids), counts["embedded"], counts["reused"]


async def _next_batch(
    batches: asyncio.Queue[tuple[list[Example], Embedded] | None], producer: asyncio.Task[None]
) -> tuple[list[Example], Embedded] | None:
    """The next encoded batch, or None at the end. A producer that failed (the encoder,
    the store, the table) puts no end marker, so waiting on the queue alone would wait
    forever: its error is raised here instead."""
    getter = asyncio.ensure_future(batches.get())
    try:
        await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        getter.cancel()
        raise
    if not getter.done() and (producer.cancelled() or producer.exception() is not None):
        getter.cancel()
        await producer  # raises its error
    return await getter


async def _dense(
    store: VectorStore,
    encoder: Encoder,
    chunk: list[Example],
    live: str | None,
    counts: dict[str, int],
) -> np.ndarray:
    """The chunk's dense vectors: the live version's for unchanged rows, else encoded."""
    known: dict[str, list[float]] = {}
    if live is not None:
        known = await store.vectors(live, [e.row_id for e in chunk])
    fresh = [e for e in chunk if e.row_id not in known]
    encoded = await asyncio.to_thread(encoder.encode, [e.text for e in fresh]) if fresh else None
    vectors = np.empty((len(chunk), encoder.dimension), dtype=np.float32)
    fresh_rows = iter(range(len(fresh)))
    for row, example in enumerate(chunk):
        if example.row_id in known:
            vectors[row] = known[example.row_id]
        else:
            assert encoded is not None
            vectors[row] = encoded[next(fresh_rows)]
    counts["embedded"] += len(fresh)
    counts["reused"] += len(chunk) - len(fresh)
    return vectors


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a run will write: on top of which live version (reusing its vectors when
    ``incremental``), and the new version's metadata."""

    live: str | None
    incremental: bool
    metadata: IndexMetadata


async def _plan(
    store: VectorStore,
    retriever: Retriever,
    lexicon: Lexicon | None,
    report: TableReport,
    table: str | Path,
    *,
    full: bool,
    replace_mode: bool,
    settings: Settings,
) -> _Plan:
    live = await store.current_version()
    live_meta = IndexMetadata.from_json(await store.metadata(live), live) if live else None
    if live is not None and live_meta is not None and not replace_mode:
        _refuse_mode_change(live, live_meta, retriever.mode, settings)
    encoder = retriever.encoder
    same_encoder = (
        encoder is not None and live_meta is not None and live_meta.encoder == encoder.fingerprint
    )
    incremental = not full and same_encoder
    if encoder is not None and live_meta is not None and not incremental and not full:
        log.info("encoder changed (%s -> %s): full rebuild", live_meta.encoder, encoder.fingerprint)
    metadata = IndexMetadata(
        **retriever.describe(lexicon),
        labels=tuple(sorted(report.labels)),
        rows=report.accepted,
        table=str(table),
        build="incremental" if incremental else "full",
        base=live if incremental else None,
        replaces=live,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return _Plan(live, incremental, metadata)


def _refuse_mode_change(live: str, live_meta: IndexMetadata, mode: str, settings: Settings) -> None:
    """A run in another retrieval mode would replace the users' index with one their
    routers (configured for the old mode) refuse: it takes an explicit request."""
    built = live_meta.retrieval
    if built == mode:
        return
    raise IndexWriteError(
        f"the published version {live} of collection {settings.store.collection!r} is a "
        f"{built} index, and this run would replace it with a {mode} one: set "
        f"retrieval.mode: {built} to update it, use another store.collection to keep both, "
        "or pass --replace-mode to replace it (--full is not enough)"
    )


async def _build(
    store: VectorStore,
    version: str,
    plan: _Plan,
    retriever: Retriever,
    lexicon: Lexicon | None,
    report: TableReport,
    settings: Settings,
    *,
    progress: bool,
    holdout: Holdout | None,
) -> tuple[int, int, int]:
    """Write the rows, fit the head, pass the gates: (distinct rows, embedded, reused).
    Raises IndexWriteError naming each failed gate."""
    labels = plan.metadata.labels
    canaries = Canaries(settings.index.canary_per_label)
    head = HeadData() if settings.index.head else None
    live = plan.live if plan.incremental else None
    rows, embedded, reused = await _write(
        store, version, retriever, lexicon, report, settings, live, canaries, progress, head
    )
    if head is not None and len(labels) < 2:
        # Say so: the user asked for a head, and the version will have none.
        log.warning(
            "index.head: no linear head fitted for %s: it needs two labels, the table has %s",
            version,
            list(labels),
        )
    elif head is not None:
        started = time.perf_counter()
        fitted = await asyncio.to_thread(
            partial(head.fit, morph_from=morph_from(settings.lexical)),
            lexicon,
            settings.index.head_c,
        )
        await store.add_metadata(version, plan.metadata.with_head(fitted.to_metadata()).to_json())
        log.info(
            "fitted the linear head of %s (%d rows, %d labels) in %.1f s",
            version,
            rows,
            len(labels),
            time.perf_counter() - started,
        )
    failures = await check_gates(
        store,
        version,
        retriever,
        lexicon,
        settings,
        rows,
        labels,
        canaries,
        holdout=holdout,
        live=plan.live,
    )
    if failures:
        raise IndexWriteError(
            f"gate failed for {version}; the published version stays "
            f"{plan.live or '(none)'}:\n" + "\n".join(f"  {f}" for f in failures)
        )
    return rows, embedded, reused


async def _prepare(
    settings: Settings,
    table: str | Path,
    encoder: Encoder | None,
    extra: Sequence[str | Path] = (),
    progress: bool = False,
) -> tuple[TableReport, Retriever, Lexicon | None]:
    """Validate the whole table and its ``extra`` tables (nothing is written when a row
    breaks an ``error`` policy), load the encoder, and count the n-grams' document
    frequencies."""
    report = scan_table(table, settings.table, extra, progress=progress)
    report.raise_for_errors()
    for problem in report.problems:
        log.warning("%s", problem)
    retriever = Retriever.from_settings(settings, encoder)
    lexicon = None
    if retriever.lexical is not None:
        lexicon = await asyncio.to_thread(_lexicon, retriever, report, settings, progress)
    return report, retriever, lexicon


async def run_index(
    settings: Settings,
    table: str | Path,
    *,
    encoder: Encoder | None = None,
    store: VectorStore | None = None,
    progress: bool = True,
    full: bool = False,
    holdout: str | Path | None = None,
    replace_mode: bool = False,
    extra: Sequence[str | Path] = (),
) -> IndexReport:
    """Index ``table`` (with the rows of the ``extra`` tables appended: validated
    together, so ``table.on_conflicting_labels`` decides a text they label differently)
    and publish it. Raises TableError (nothing written), ModelLoadError,
    StoreUnavailable or IndexWriteError (a gate failed, or the live version was built in
    another retrieval mode and ``replace_mode`` is not set: nothing published)."""
    # Read first: a bad held-out file must stop the run before the model loads and
    # anything is encoded, not after.
    held = read_holdout(holdout, settings.table) if holdout is not None else None
    report, retriever, lexicon = await _prepare(settings, table, encoder, extra, progress)
    own_store = store is None
    store = store or open_store(settings.store)
    try:
        async with store.exclusive():
            await remove_drafts(store)
            plan = await _plan(
                store,
                retriever,
                lexicon,
                report,
                table,
                full=full,
                replace_mode=replace_mode,
                settings=settings,
            )
            version = await store.create_version(
                retriever.encoder.dimension if retriever.encoder is not None else None,
                plan.metadata.to_json(),
                sparse=retriever.lexical is not None,
            )
            try:
                rows, embedded, reused = await _build(
                    store,
                    version,
                    plan,
                    retriever,
                    lexicon,
                    report,
                    settings,
                    progress=progress,
                    holdout=held,
                )
                previous = await store.publish(version)
            except BaseException:
                await store.drop(version)
                raise
            labels = plan.metadata.labels
            log.info(
                "published %s (%d rows, %d labels; %d embedded, %d reused)",
                version,
                rows,
                len(labels),
                embedded,
                reused,
            )
            dropped = await retain(store, settings.store.collection, settings.index.keep_versions)
            return IndexReport(
                version=version,
                previous=previous,
                rows=rows,
                labels=labels,
                mode=plan.metadata.build,
                embedded=embedded,
                reused=reused,
                dropped=tuple(dropped),
                table=report,
            )
    finally:
        if own_store:
            await store.close()
