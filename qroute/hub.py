"""What qroute loads from outside itself: a model from disk or the Hugging Face hub, and an
optional package from one of its extras; both fail fast with a usable message."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from qroute.errors import MissingDependency, ModelLoadError

__all__ = ["encoder_alternative", "nli_alternative", "optional_import", "resolve_model"]


def encoder_alternative(zero_shot_method: str) -> str:
    """The settings under which the router needs no sentence encoder."""
    advice = "To run without a sentence encoder: QROUTE_RETRIEVAL__MODE=lexical"
    if zero_shot_method == "embedding":
        advice += (
            " with QROUTE_ZERO_SHOT__METHOD=off (zero_shot.method embedding scores with this "
            "encoder too)"
        )
    elif zero_shot_method == "nli":
        advice += (
            " (zero_shot.method nli still loads the NLI model: add QROUTE_ZERO_SHOT__METHOD=off "
            "for no model at all)"
        )
    return advice + "; see the README's quickstart without models."


def nli_alternative(retrieval_mode: str) -> str:
    """The settings under which the router needs no NLI model."""
    embedding = (
        ""
        if retrieval_mode == "lexical"
        else ", or QROUTE_ZERO_SHOT__METHOD=embedding (label descriptions scored with the "
        "sentence encoder)"
    )
    return (
        "To run without an NLI model: QROUTE_ZERO_SHOT__METHOD=off (no zero-shot fallback: "
        f"below the thresholds the answer is NO_MATCH){embedding}."
    )


def resolve_model(name_or_path: str, role: str, env_var: str, without: str = "") -> str:
    """Return a local directory holding the model ``name_or_path``.

    A local directory is used as it is. Anything else is a hub id: it is taken from
    the local Hugging Face cache, or downloaded. Raises ModelLoadError naming the
    model, the setting (``env_var``) that points at a local copy instead and, where
    given, ``without``: the settings under which the model is not needed at all.
    """
    tail = f" {without}" if without else ""
    try:
        path = Path(name_or_path).expanduser()
    except RuntimeError:
        # "~user/..." with no such user, or "~/..." with no HOME and no passwd entry
        # (a container under an arbitrary uid): pathlib cannot say where home is.
        raise ModelLoadError(
            f"{role} model directory {name_or_path!r}: cannot find the home directory its "
            f"'~' names; give the path without '~' (set {env_var}).{tail}"
        ) from None
    if path.is_dir():
        return str(path)
    if path.is_absolute() or name_or_path.startswith((".", "~")):
        raise ModelLoadError(
            f"{role} model directory {name_or_path!r} does not exist (set {env_var}).{tail}"
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
            f"and point qroute at the copy: {env_var}=DIR, or the same key in qroute.yaml."
            f"{tail}"
        ) from exc


def optional_import(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, which only the ``extra`` installs; raises MissingDependency
    naming what needs it and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{purpose} needs {module.split('.')[0]}, which the router's install leaves out: "
            f"pip install 'qroute[{extra}]'"
        ) from exc
