"""ONNX Runtime backends for the encoder and the NLI model: ``torch`` | ``onnx`` | ``onnx-int8``.

The transformer is exported from its local directory with ``torch.onnx.export`` (the
TorchScript exporter) and, for ``onnx-int8``, quantised with onnxruntime's dynamic int8
quantiser. Sentence-transformers' own ONNX backend and its quantiser go through optimum,
whose releases pin transformers below the version qroute installs, so they are not used.

Both files are written once into a cache folder keyed by the model's weights digest;
later loads (other processes too: a file lock serialises the export) only read them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
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


def cache_root(setting: str) -> Path:
    """The folder of exported models: the setting, else $XDG_CACHE_HOME/qroute/onnx
    (~/.cache/qroute/onnx)."""
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qroute" / "onnx"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    ``cache/key`` the first time. ``setting`` names the backend setting in errors."""
    if backend == "torch":
        raise ValueError("the torch backend has no ONNX file")
    optional_import("onnxruntime", "onnx", f"{setting}: {backend}")
    optional_import("onnx", "onnx", f"{setting}: {backend}")
    folder = cache / key
    fp32 = folder / "model.onnx"
    target = folder / ("model-int8.onnx" if backend == "onnx-int8" else "model.onnx")
    if target.is_file():
        return target
    try:
        with _locked(folder):
            if target.is_file():  # another process exported it while this one waited
                return target
            if not fp32.is_file():
                log.warning(
                    "%s: %s: exporting the model to ONNX, once, into %s", setting, backend, folder
                )
                with tempfile.TemporaryDirectory(dir=folder) as scratch:
                    part = Path(scratch) / fp32.name
                    _export(model, inputs, output, part)
                    os.replace(part, fp32)
            if backend == "onnx-int8":
                log.warning(
                    "%s: onnx-int8: quantising the ONNX model to int8, once, into %s",
                    setting,
                    folder,
                )
                with tempfile.TemporaryDirectory(dir=folder) as scratch:
                    part = Path(scratch) / target.name
                    _quantize(fp32, part)
                    os.replace(part, target)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{setting}: {backend}: exporting the model to ONNX into {folder} failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r}); "
            f"set {setting}: torch to run it in PyTorch"
        ) from exc
    return target


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
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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
