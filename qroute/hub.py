"""Find a model on disk or on the Hugging Face hub, failing fast with a usable message."""

from __future__ import annotations

from pathlib import Path

from qroute.errors import ModelLoadError

__all__ = ["resolve_model"]


def resolve_model(name_or_path: str, role: str, env_var: str) -> str:
    """Return a local directory holding the model ``name_or_path``.

    A local directory is used as it is. Anything else is a hub id: it is taken from
    the local Hugging Face cache, or downloaded. Raises ModelLoadError naming the
    model and the setting (``env_var``) that points at a local copy instead.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_absolute() or name_or_path.startswith((".", "~")):
        raise ModelLoadError(
            f"{role} model directory {name_or_path!r} does not exist (set {env_var})"
        )

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(name_or_path, etag_timeout=10)
    except (OSError, HFValidationError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the {role} model {name_or_path!r}: it is not a local directory, and "
            f"fetching it from the Hugging Face hub failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc!r}). Download it on a machine that "
            f"reaches the hub (`hf download {name_or_path} --local-dir DIR`) "
            f"and point qroute at the copy: {env_var}=DIR, or the same key in qroute.yaml. "
            "To run with no model at all, use lexical retrieval: QROUTE_RETRIEVAL__MODE=lexical "
            "(retrieval.mode: lexical; see the README's quickstart without models)."
        ) from exc
