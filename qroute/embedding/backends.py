"""ONNX Runtime backends for the encoder and the NLI model: ``torch`` | ``onnx`` | ``onnx-int8``.

The transformer is exported from its local directory with ``torch.onnx.export`` (the
TorchScript exporter) and, for ``onnx-int8``, quantised with onnxruntime's dynamic int8
quantiser. Sentence-transformers' own ONNX backend and its quantiser go through optimum,
whose releases pin transformers below the version qroute installs, so they are not used.

Each is written once into a cache folder keyed by the model's weights digest, as a build:
a subfolder named after the backend, holding the model file (and any external data the
exporter writes beside a model over 2 GB) and a manifest of every file's size and digest.
A build is written in a scratch folder and renamed into place, under a file lock that
serialises the export between processes; later loads check it against its manifest and
only read it. A build that does not match (a truncated or overwritten file, an export
killed midway, one by an older qroute) is exported again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import numpy.typing as npt

from qroute.config.models import Backend
from qroute.errors import ModelLoadError
from qroute.hub import optional_import

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxRunner",
    "cache_root",
    "onnx_file",
]

log = logging.getLogger(__name__)

BACKENDS: tuple[Backend, ...] = get_args(Backend)
# Opset 17 has LayerNormalization, which ORT fuses; the TorchScript exporter supports it.
_OPSET = 17
# Written last into a build's folder: the files of the build, each with its size and
# sha256. Bump _FORMAT when the export or the quantisation changes what it writes: the
# builds of an older qroute are then exported again rather than reused.
_MANIFEST = "qroute-onnx.json"
_FORMAT = 1
# Scratch folders of an export in progress; "tmp" is what qroute before builds named them.
_SCRATCH = (".scratch-", "tmp")


def cache_root(setting: str) -> Path:
    """The folder of exported models: the setting (``~`` expanded), else
    $XDG_CACHE_HOME/qroute/onnx (~/.cache/qroute/onnx)."""
    try:
        if setting:
            return Path(setting).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except RuntimeError:
        # No HOME and no passwd entry (a container under an arbitrary uid): pathlib
        # cannot say where "~" is.
        raise ModelLoadError(
            f"the ONNX cache folder {setting or '~/.cache/qroute/onnx'!r}: cannot find the "
            "home directory; set encoder.onnx_cache / nli.onnx_cache to a folder without '~' "
            "(or XDG_CACHE_HOME)"
        ) from None
    return Path(base) / "qroute" / "onnx"


@contextlib.contextmanager
def _locked(folder: Path, waiting: str | None) -> Iterator[bool]:
    """Holds ``folder``'s export lock; yields whether it got it. ``waiting``: logged when
    another process holds it, then waited for; None: do not wait (yields False)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is None:
                yield False
                return
            # Another worker is exporting this model, minutes for a large one: say why
            # this one does not start meanwhile.
            log.warning("%s", waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_manifest(build: Path) -> None:
    files = sorted(p for p in build.rglob("*") if p.is_file())
    manifest = {
        "format": _FORMAT,
        "opset": _OPSET,
        "files": {
            p.relative_to(build).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in files
        },
    }
    (build / _MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _damage(build: Path, name: str) -> str:
    """Why the build in ``build`` cannot be used, "" when it can. Every file is hashed
    against the manifest: a file overwritten in place keeps its size, and ONNX Runtime
    loads damaged weights without a word, to compute other vectors."""
    if not build.is_dir():
        return "no build"
    try:
        recorded = json.loads((build / _MANIFEST).read_text(encoding="utf-8"))
        if recorded.get("format") != _FORMAT or recorded.get("opset") != _OPSET:
            return "written by another qroute version"
        files = recorded["files"]
        if name not in files:
            return f"{_MANIFEST} does not list {name}"
        for relative, entry in files.items():
            path = build / relative
            size = path.stat().st_size
            if size != entry["size"]:
                return f"{relative} is {size} bytes, not the {entry['size']} written"
            if _sha256(path) != entry["sha256"]:
                return f"{relative} differs from what was written"
    except FileNotFoundError as exc:
        return f"{Path(exc.filename or _MANIFEST).name} is missing"
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"{_MANIFEST} is unreadable ({type(exc).__name__})"
    return ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _sweep(folder: Path) -> None:
    """Removes the scratch folders of exports killed midway (a worker OOM-killed while
    exporting leaves a partial model, gigabytes for a large one). Only with the lock
    held: then no export is writing into any of them."""
    for path in folder.iterdir():
        if path.is_dir() and path.name.startswith(_SCRATCH):
            shutil.rmtree(path, ignore_errors=True)


def _publish(folder: Path, build: Path, name: str, write: Callable[[Path], None]) -> None:
    """Runs ``write`` on a file ``name`` in a scratch folder, adds the manifest and
    renames the folder to ``build``: other processes see a whole build or none. Without
    an fsync a crash may still leave a renamed build with empty files; the manifest check
    catches that on the next load."""
    scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH[0], dir=folder))
    try:
        write(scratch / name)
        _write_manifest(scratch)
        if build.exists() or build.is_symlink():
            _remove(build)
        os.replace(scratch, build)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Outputs:
    """Builds the torch module the exporter traces: positional tensors in, one output."""

    @staticmethod
    def module(model: Any, inputs: Sequence[str], output: str) -> Any:
        import torch

        class Traced(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                result = self.model(**dict(zip(inputs, tensors, strict=True)), return_dict=True)
                return result[output]  # type: ignore[no-any-return]

        return Traced()


def _export(model: Any, inputs: Sequence[str], output: str, target: Path) -> None:
    import torch

    # The eager attention traces to plain MatMul/Softmax with dynamic shapes, whatever
    # attention the model was loaded with.
    with contextlib.suppress(AttributeError, ValueError):
        model.set_attn_implementation("eager")
    model = model.eval()
    # A padded example: with an all-ones mask transformers skips the mask, and the
    # trace would then ignore the padding of every later batch.
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0
    example = {
        "input_ids": torch.ones((2, 8), dtype=torch.long),
        "attention_mask": mask,
        "token_type_ids": torch.zeros((2, 8), dtype=torch.long),
    }
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export's, which needs
        # onnxscript besides; it still writes these models, and its tracer warns about
        # Python conditions on shapes that the padded example exercises.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Outputs.module(model, inputs, output),
            tuple(example[name] for name in inputs),
            str(target),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The weights of the MatMuls as signed int8, one scale per output channel, the
    # activations quantised at run time. One scale per tensor, or the embedding Gathers
    # quantised too, moved all-MiniLM-L6-v2's vectors to 0.93-0.98 cosine of fp32's;
    # per channel keeps them near 0.99.
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )


def onnx_file(
    model: Any,
    *,
    key: str,
    backend: Backend,
    inputs: Sequence[str],
    output: str,
    cache: Path,
    setting: str,
) -> Path:
    """The ONNX file of ``model`` for ``backend``, exported (and quantised) into
    ``cache/key/backend`` the first time, and again when that build is damaged.
    ``setting`` names the backend setting in errors."""
    if backend == "torch":
        raise ValueError("the torch backend has no ONNX file")
    optional_import("onnxruntime", "onnx", f"{setting}: {backend}")
    optional_import("onnx", "onnx", f"{setting}: {backend}")
    folder = cache / key
    fp32_build, fp32_name = folder / "onnx", "model.onnx"
    build = folder / backend
    name = "model-int8.onnx" if backend == "onnx-int8" else fp32_name
    try:
        if not _damage(build, name):
            if any(p.name.startswith(_SCRATCH) for p in folder.iterdir()):
                # A read-only cache (baked into an image) cannot be swept: serve anyway.
                with contextlib.suppress(OSError), _locked(folder, None) as free:
                    if free:
                        _sweep(folder)
            return build / name
        waiting = (
            f"{setting}: {backend}: waiting for another process exporting the model into {folder}"
        )
        with _locked(folder, waiting):
            damage = _damage(build, name)
            if not damage:  # another process exported it while this one waited
                return build / name
            _sweep(folder)
            fp32_damage = damage if build == fp32_build else _damage(fp32_build, fp32_name)
            if fp32_damage:
                _rebuilding(fp32_build, fp32_damage, setting, backend)
                log.warning(
                    "%s: %s: exporting the model to ONNX, once, into %s",
                    setting,
                    backend,
                    fp32_build,
                )
                _publish(
                    folder,
                    fp32_build,
                    fp32_name,
                    lambda part: _export(model, inputs, output, part),
                )
            if backend == "onnx-int8":
                _rebuilding(build, damage, setting, backend)
                log.warning(
                    "%s: onnx-int8: quantising the ONNX model to int8, once, into %s",
                    setting,
                    build,
                )
                _publish(folder, build, name, lambda part: _quantize(fp32_build / fp32_name, part))
    except ModelLoadError:
        raise
    except OSError as exc:
        section = setting.split(".")[0]
        raise ModelLoadError(
            f"{setting}: {backend}: cannot write the ONNX export into {folder} "
            f"({type(exc).__name__}: {exc}); set {section}.onnx_cache to a writable folder, "
            f"or {setting}: torch to run the model in PyTorch"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{setting}: {backend}: exporting the model to ONNX into {folder} failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r}); "
            f"set {setting}: torch to run it in PyTorch"
        ) from exc
    return build / name


def _rebuilding(build: Path, damage: str, setting: str, backend: str) -> None:
    """Says why a build that exists is built again (a missing one is no news)."""
    if damage and (build.exists() or build.is_symlink()):
        log.warning(
            "%s: %s: the cached ONNX model in %s cannot be used (%s); building it again",
            setting,
            backend,
            build,
            damage,
        )


class OnnxRunner:
    """One ONNX Runtime session on the CPU. ``threads`` intra-op threads (default: torch's
    thread count, which the process sets, e.g. one per server worker), one inter-op."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        ort = optional_import("onnxruntime", "onnx", "an ONNX backend")
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own exception types derive from Exception only
            raise ModelLoadError(
                f"ONNX Runtime cannot load {path} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else exc!r}); delete the folder "
                f"{path.parent}: the model is exported into it again at the next start"
            ) from exc
        self.inputs = tuple(i.name for i in self._session.get_inputs())

    def run(self, feed: Mapping[str, Any]) -> npt.NDArray[np.float32]:
        """The model's one output for the named inputs (numpy or torch int tensors)."""
        arrays = {
            name: np.asarray(
                feed[name].numpy() if hasattr(feed[name], "numpy") else feed[name],
                dtype=np.int64,
            )
            for name in self.inputs
        }
        (result,) = self._session.run(None, arrays)
        return np.asarray(result, dtype=np.float32)


def model_inputs(model: Any, tokenizer: Any) -> tuple[str, ...]:
    """The inputs the exported graph takes: what the tokenizer produces and the model
    accepts (BERT takes token_type_ids, XLM-R does not)."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])
    wanted = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]
    return tuple(n for n in wanted if n in accepted)
