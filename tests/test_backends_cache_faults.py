"""The ONNX export cache (qroute.embedding.backends) when its files are not what was
written: damaged or partial builds, scratch folders of killed exports, concurrent
exports, large models' external data, and cache folders that cannot be written."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qroute.config import EncoderSettings
from qroute.embedding import backends
from qroute.embedding.dense import SentenceTransformerEncoder
from qroute.errors import ModelLoadError
from qroute.testing import TinyModels

TEXTS = ["코스닥 지수 알려줘", "내일 비 와?", "이번 주 개봉 영화"]


def _encoder(model: Path, backend: str, cache: Path) -> SentenceTransformerEncoder:
    settings = EncoderSettings(model=str(model), backend=backend, onnx_cache=str(cache))
    return SentenceTransformerEncoder(settings)


def _only(cache: Path, name: str) -> Path:
    (found,) = cache.rglob(name)
    return found


def _key_folder(cache: Path) -> Path:
    """The folder of one model's exports: the one its export lock sits in."""
    return _only(cache, ".lock").parent


@pytest.fixture
def nli(tiny_models: TinyModels) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """The tiny NLI model and its graph inputs, for calling ``onnx_file`` directly."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models.nli)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.nli)
    yield model, backends.model_inputs(model, tokenizer)


def _nli_file(nli: tuple[Any, tuple[str, ...]], cache: Path, backend: str = "onnx") -> Path:
    model, inputs = nli
    return backends.onnx_file(
        model,
        key="nli@test/nli",
        backend=backend,  # type: ignore[arg-type]
        inputs=inputs,
        output="logits",
        cache=cache,
        setting="nli.backend",
    )


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwrite_weights(path: Path) -> None:
    # Same size, one weight matrix every text goes through negated in place: ONNX
    # Runtime loads such a file without complaint and computes other vectors.
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    weights = [
        numpy_helper.to_array(t)
        for t in proto.graph.initializer
        if "embeddings" not in t.name and t.data_type == onnx.TensorProto.FLOAT and t.dims
    ]
    raw = max(weights, key=lambda w: w.size).astype(np.float32).tobytes()
    data = path.read_bytes()
    start = data.index(raw)
    flipped = (-np.frombuffer(raw, dtype=np.float32)).tobytes()
    path.write_bytes(data[:start] + flipped + data[start + len(raw) :])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not an onnx model\xff" * 50)


@pytest.mark.parametrize(
    ("backend", "file", "damage"),
    [
        ("onnx", "model.onnx", _truncate),
        ("onnx", "model.onnx", _overwrite_weights),
        ("onnx", "model.onnx", _garbage),
        ("onnx-int8", "model-int8.onnx", _truncate),
    ],
    ids=["truncated", "overwritten", "garbage", "int8-truncated"],
)
def test_a_damaged_cached_model_is_exported_again(
    tiny_models: TinyModels,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    file: str,
    damage: Any,
) -> None:
    first = _encoder(tiny_models.encoder, backend, tmp_path).encode(TEXTS)
    cached = _only(tmp_path, file)
    damage(cached)
    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        again = _encoder(tiny_models.encoder, backend, tmp_path).encode(TEXTS)
    # The same vectors as the intact export, not an ONNX Runtime error or other vectors.
    assert np.allclose(first, again, atol=1e-6)
    assert f"{cached.parent}" in caplog.text and "cannot be used" in caplog.text
    assert "building it again" in caplog.text


def test_an_int8_rebuild_reuses_the_intact_fp32_export(
    tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _encoder(tiny_models.encoder, "onnx-int8", tmp_path)
    _truncate(_only(tmp_path, "model-int8.onnx"))

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "_export", no_export)
    _encoder(tiny_models.encoder, "onnx-int8", tmp_path).encode(TEXTS)


def test_a_file_onnx_runtime_cannot_load_names_the_folder_to_delete(tmp_path: Path) -> None:
    path = tmp_path / "encoder@0123/encoder/onnx/model.onnx"
    path.parent.mkdir(parents=True)
    _garbage(path)
    with pytest.raises(ModelLoadError, match="delete the folder") as raised:
        backends.OnnxRunner(path, threads=1)
    assert str(path) in str(raised.value) and str(path.parent) in str(raised.value)


def test_the_scratch_folders_of_a_killed_export_are_removed(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    first = _encoder(tiny_models.encoder, "onnx", tmp_path).encode(TEXTS)
    folder = _key_folder(tmp_path)
    # What a worker killed midway through its export leaves: qroute before builds named
    # its scratch folders tmp*, qroute now .scratch-*.
    for leftover in ("tmpk1ll3d", ".scratch-k1ll3d"):
        (folder / leftover).mkdir()
        (folder / leftover / "model.onnx").write_bytes(b"partial" * 1000)
    again = _encoder(tiny_models.encoder, "onnx", tmp_path).encode(TEXTS)
    assert np.array_equal(first, again)
    assert not (folder / "tmpk1ll3d").exists() and not (folder / ".scratch-k1ll3d").exists()


def test_a_scratch_folder_another_process_is_writing_is_left_alone(
    nli: tuple[Any, tuple[str, ...]], tmp_path: Path
) -> None:
    _nli_file(nli, tmp_path)
    folder = _key_folder(tmp_path)
    live = folder / ".scratch-live"
    live.mkdir()
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another process, exporting into .scratch-live
        try:
            assert _nli_file(nli, tmp_path).is_file()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    assert live.is_dir()


def test_a_model_exported_with_external_data_loads(
    tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 2 GB (xlm-roberta-large, bge-m3 in fp32) the exporter writes each weight as
    a file beside model.onnx: the cache must keep them with it."""
    import onnx

    export = backends._export

    def large(model: Any, inputs: Any, output: str, target: Path) -> None:
        export(model, inputs, output, target)
        proto = onnx.load(str(target))
        onnx.save_model(
            proto, str(target), save_as_external_data=True, all_tensors_to_one_file=False
        )

    exact = _encoder(tiny_models.encoder, "torch", tmp_path).encode(TEXTS)
    monkeypatch.setattr(backends, "_export", large)
    for backend, bound in (("onnx", 0.9999), ("onnx-int8", 0.97)):
        approx = _encoder(tiny_models.encoder, backend, tmp_path).encode(TEXTS)
        assert float((approx * exact).sum(axis=1).min()) >= bound
    assert len([p for p in _only(tmp_path, "model.onnx").parent.iterdir() if p.is_file()]) > 3


def test_concurrent_exports_of_one_model_export_it_once(
    nli: tuple[Any, tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = backends._export
    exports: list[Path] = []
    visible: list[list[Path]] = []

    def slow(model: Any, inputs: Any, output: str, target: Path) -> None:
        export(model, inputs, output, target)
        exports.append(target)
        time.sleep(0.5)  # the other workers arrive while this one is still writing
        # What a reader could pick up meanwhile: model files outside a scratch folder.
        visible.append(
            [p for p in tmp_path.rglob("*.onnx") if not p.parent.name.startswith((".", "tmp"))]
        )

    monkeypatch.setattr(backends, "_export", slow)
    results: list[Path | BaseException] = []

    def load() -> None:
        try:
            results.append(_nli_file(nli, tmp_path))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 3 and all(isinstance(r, Path) for r in results), results
    assert len(set(results)) == 1 and len(exports) == 1
    assert visible == [[]]
    backends.OnnxRunner(results[0], threads=1)  # type: ignore[arg-type]


def test_waiting_for_another_process_export_is_logged(
    nli: tuple[Any, tuple[str, ...]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "nli@test/nli"
    folder.mkdir(parents=True)
    result: list[Path | BaseException] = []

    def load() -> None:
        try:
            result.append(_nli_file(nli, tmp_path))
        except BaseException as exc:
            result.append(exc)

    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        with (folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # another worker, exporting
            thread = threading.Thread(target=load)
            thread.start()
            deadline = time.monotonic() + 20
            while "waiting for another process" not in caplog.text:
                assert time.monotonic() < deadline, "no message while waiting for the lock"
                time.sleep(0.05)
            assert not result  # it waits, rather than exporting beside the other
            fcntl.flock(handle, fcntl.LOCK_UN)
        thread.join(timeout=60)
    assert len(result) == 1 and isinstance(result[0], Path)
    assert str(folder) in caplog.text


def test_an_onnx_cache_under_home_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert backends.cache_root("~/qroute-onnx") == tmp_path / "qroute-onnx"


def test_an_unwritable_cache_names_the_cache_setting(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    # Not a permission bit: the tests may run as root, who writes anywhere.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ModelLoadError, match=r"encoder\.onnx_cache to a writable folder") as err:
        _encoder(tiny_models.encoder, "onnx", blocker / "onnx")
    assert str(blocker / "onnx") in str(err.value)
