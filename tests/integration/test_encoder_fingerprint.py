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
