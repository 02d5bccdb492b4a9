"""encoder.backend / nli.backend: ONNX Runtime fp32 and int8, exported once into a cache."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from qroute_indexer import run_index

from qroute.config import EncoderSettings, NLISettings, Settings, ZeroShotSettings
from qroute.embedding import backends
from qroute.embedding.dense import SentenceTransformerEncoder
from qroute.errors import EncoderMismatch, MissingDependency, ModelLoadError
from qroute.routing.retrieval import Retriever
from qroute.routing.zeroshot import NLIZeroShot, ZeroShotItem
from qroute.store.embedded import EmbeddedStore
from qroute.store.metadata import IndexMetadata
from qroute.testing import TinyModels
from tests.conftest import example_rows

TEXTS = [r["text"] for r in example_rows()[:40]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def _encoder(model: Path, backend: str, cache: Path) -> SentenceTransformerEncoder:
    settings = EncoderSettings(model=str(model), backend=backend, onnx_cache=str(cache))  # type: ignore[arg-type]
    return SentenceTransformerEncoder(settings)


@pytest.mark.parametrize(("backend", "bound"), [("onnx", 0.9999), ("onnx-int8", 0.97)])
def test_onnx_vectors_are_close_to_torch(
    tiny_models: TinyModels, cache: Path, backend: str, bound: float
) -> None:
    exact = _encoder(tiny_models.encoder, "torch", cache).encode(TEXTS)
    approx = _encoder(tiny_models.encoder, backend, cache).encode(TEXTS)
    assert approx.shape == exact.shape and approx.dtype == np.float32
    assert np.allclose(np.linalg.norm(approx, axis=1), 1.0, atol=1e-4)
    assert float((approx * exact).sum(axis=1).min()) >= bound


def test_the_export_runs_once_then_loads_from_the_cache(
    tiny_models: TinyModels,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        first = _encoder(tiny_models.encoder, "onnx-int8", tmp_path).encode(TEXTS[:3])
    assert "exporting the model to ONNX" in caplog.text and "quantising" in caplog.text
    assert len(list(tmp_path.rglob("model-int8.onnx"))) == 1

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "_export", no_export)
    monkeypatch.setattr(backends, "_quantize", no_export)
    again = _encoder(tiny_models.encoder, "onnx-int8", tmp_path).encode(TEXTS[:3])
    assert np.array_equal(first, again)


def test_the_backend_is_part_of_the_fingerprint(tiny_models: TinyModels, cache: Path) -> None:
    prints = {b: _encoder(tiny_models.encoder, b, cache).fingerprint for b in backends.BACKENDS}
    assert len(set(prints.values())) == 3
    # Indexes built before backends existed (torch) keep their fingerprint.
    assert "backend" not in prints["torch"]


async def test_the_router_refuses_an_index_built_with_another_backend(
    tiny_models: TinyModels, make_settings: Callable[..., Settings], tmp_path: Path, cache: Path
) -> None:
    table = tmp_path / "t.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((r["text"], r["label"]) for r in example_rows()[:30])
    before = make_settings()
    after = make_settings(encoder={"backend": "onnx-int8", "onnx_cache": str(cache)})
    torch_encoder = _encoder(tiny_models.encoder, "torch", cache)
    built = await run_index(before, table, encoder=torch_encoder, progress=False)
    store = EmbeddedStore(after.store.location, after.store.collection, drain_s=0.2)
    metadata = IndexMetadata.from_json(await store.metadata(built.version), built.version)
    await store.close()
    int8 = _encoder(tiny_models.encoder, "onnx-int8", cache)
    with pytest.raises(EncoderMismatch, match="re-index"):
        Retriever.from_settings(after, int8).check(built.version, metadata)
    Retriever.from_settings(before, torch_encoder).check(built.version, metadata)


def test_without_onnxruntime_the_error_names_the_setting_and_the_extra(
    tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependency, match=r"encoder\.backend: onnx.*qroute\[onnx\]"):
        _encoder(tiny_models.encoder, "onnx", tmp_path)


def test_a_failed_export_names_the_setting_and_leaves_no_file(
    tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(backends, "_export", broken)
    with pytest.raises(ModelLoadError, match=r"nli\.backend: onnx: exporting.*operator foo"):
        NLIZeroShot(
            NLISettings(model=str(tiny_models.nli), backend="onnx", onnx_cache=str(tmp_path))
        )
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_nli_scores_from_onnx_are_close_to_torch(
    tiny_models: TinyModels, cache: Path, backend: str
) -> None:
    items = [
        ZeroShotItem("코스닥 지수 알려줘", None, ("금융", "영화", "날씨")),
        ZeroShotItem("비 와?", None, ("날씨", "교통")),
    ]
    exact = NLIZeroShot(NLISettings(model=str(tiny_models.nli))).score(items, ZeroShotSettings())
    scorer = NLIZeroShot(
        NLISettings(model=str(tiny_models.nli), backend=backend, onnx_cache=str(cache))  # type: ignore[arg-type]
    )
    assert scorer.model is None  # the torch weights are not kept beside the session
    approx = scorer.score(items, ZeroShotSettings())
    tolerance = 1e-4 if backend == "onnx" else 0.05
    for ours, theirs in zip(approx, exact, strict=True):
        assert {s.label: s.score for s in ours} == pytest.approx(
            {s.label: s.score for s in theirs}, abs=tolerance
        )


def test_the_old_quantize_key_is_refused_with_its_new_spelling() -> None:
    with pytest.raises(ValueError, match=r"nli\.backend: write backend: onnx-int8"):
        NLISettings(quantize="int8")  # type: ignore[call-arg]


@pytest.mark.parametrize("section", [EncoderSettings, NLISettings])
def test_an_onnx_backend_on_another_device_is_refused(section: type) -> None:
    with pytest.raises(ValueError, match=r"backend: onnx-int8 runs on the CPU.*device: cpu"):
        section(backend="onnx-int8", device="cuda")
