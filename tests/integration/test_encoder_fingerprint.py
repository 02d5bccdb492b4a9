"""The encoder fingerprint identifies the weights, not the folder's name: another model
saved under the same name ("model") is refused by the router and rebuilt by the indexer."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from qroute_indexer import run_index

from qroute.config import EncoderSettings, Settings
from qroute.embedding.dense import SentenceTransformerEncoder
from qroute.errors import EncoderMismatch
from qroute.routing.retrieval import Retriever
from qroute.store.embedded import EmbeddedStore
from qroute.store.metadata import IndexMetadata
from qroute.testing import TinyModels
from tests.conftest import example_rows


def _other_weights(source: Path, out: Path) -> Path:
    """The same architecture and dimension with different weights, saved to ``out``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.save(str(out))
    return out


@pytest.fixture
def two_models_named_model(tiny_models: TinyModels, tmp_path: Path) -> tuple[Path, Path]:
    first = tmp_path / "old" / "model"
    shutil.copytree(tiny_models.encoder, first)
    return first, _other_weights(tiny_models.encoder, tmp_path / "new" / "model")


def _encoder(path: Path) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(EncoderSettings(model=str(path)))


def test_same_folder_name_other_weights_other_fingerprint(
    two_models_named_model: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = two_models_named_model
    assert _encoder(old).dimension == _encoder(new).dimension
    assert _encoder(old).fingerprint != _encoder(new).fingerprint
    # The same weights anywhere else are the same model.
    copy = shutil.copytree(old, tmp_path / "elsewhere" / "model")
    assert _encoder(copy).fingerprint == _encoder(old).fingerprint


async def test_router_refuses_and_indexer_rebuilds_after_a_same_named_model_swap(
    two_models_named_model: tuple[Path, Path],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    old, new = two_models_named_model
    table = tmp_path / "t.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((r["text"], r["label"]) for r in example_rows()[:30])
    before = make_settings(encoder={"model": str(old)})
    after = make_settings(encoder={"model": str(new)})
    built = await run_index(before, table, encoder=_encoder(old), progress=False)

    store = EmbeddedStore(after.store.location, after.store.collection, drain_s=0.2)
    metadata = IndexMetadata.from_json(await store.metadata(built.version), built.version)
    with pytest.raises(EncoderMismatch, match="re-index"):
        Retriever.from_settings(after, _encoder(new)).check(built.version, metadata)

    rebuilt = await run_index(after, table, encoder=_encoder(new), store=store, progress=False)
    assert rebuilt.mode == "full" and rebuilt.reused == 0
    await store.close()


def _dense_metadata(fingerprint: str, dimension: int) -> IndexMetadata:
    return IndexMetadata(
        retrieval="dense",
        labels=("a",),
        rows=1,
        table="t.csv",
        build="full",
        created_at="2026-12-03T00:00:00+00:00",
        encoder=fingerprint,
        dimension=dimension,
    )


def _pooling_edited(source: Path, out: Path, mode: str) -> Path:
    """The same weights with the pooling switched in place, as a person editing
    ``1_Pooling/config.json`` would."""
    import json

    shutil.copytree(source, out)
    config = out / "1_Pooling" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["pooling_mode"] = mode
    config.write_text(json.dumps(data), encoding="utf-8")
    return out


def test_the_same_weights_pooled_otherwise_are_refused(
    tiny_models: TinyModels, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Only the pooling differs: the weights' digest is the same, every vector is not."""
    edited = _pooling_edited(tiny_models.encoder, tmp_path / "model", "cls")
    original, changed = _encoder(tiny_models.encoder), _encoder(edited)
    texts = ["코스닥 지수 알려줘", "서귀포 맛집 알려줘"]
    assert float((original.encode(texts) * changed.encode(texts)).sum(axis=1).min()) < 0.99
    assert original.fingerprint != changed.fingerprint
    metadata = _dense_metadata(original.fingerprint, original.dimension)
    settings = make_settings(encoder={"model": str(edited)})
    with pytest.raises(EncoderMismatch, match="re-index"):
        Retriever.from_settings(settings, changed).check("v1", metadata)


def test_an_index_fingerprinted_before_the_pipeline_counted_is_still_searched(
    tiny_models: TinyModels, make_settings: Callable[..., Settings]
) -> None:
    """A version written before the pipeline joined the fingerprint stays searchable by
    the same model after an upgrade (no outage until the next `qroute index`)."""
    import re

    encoder = _encoder(tiny_models.encoder)
    legacy = re.sub(r"\|pipe=[0-9a-f]+", "", encoder.fingerprint)
    assert legacy != encoder.fingerprint
    settings = make_settings(encoder={"model": str(tiny_models.encoder)})
    retriever = Retriever.from_settings(settings, encoder)
    retriever.check("v1", _dense_metadata(legacy, encoder.dimension))
    other = legacy.replace("|dim=", "|dim=1")
    with pytest.raises(EncoderMismatch):
        retriever.check("v1", _dense_metadata(other, encoder.dimension))
