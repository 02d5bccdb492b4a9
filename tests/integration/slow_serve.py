"""``python tests/integration/slow_serve.py DELAY serve ARGS...``: ``qroute serve`` in a
real process whose model thread sleeps DELAY seconds on every batch, as a slow model
would. It prints ``slow_serve: N submitted`` to stderr as texts reach the batcher, so a
test knows what is in flight when it signals the process. With ``SLOW_SERVE_LOAD_S`` set,
building the classifier (loading the models) takes that many seconds more, and it prints
``slow_serve: loading`` as it starts."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from qroute.cli import main
from qroute.embedding.lexical import Lexicon
from qroute.routing.batching import MicroBatcher
from qroute.routing.classifier import Classifier
from qroute.routing.retrieval import Embedded, Retriever

DELAY = float(sys.argv[1])
_embed = Retriever.embed
_submit = MicroBatcher.submit
_submitted = itertools.count(1)
_from_settings = Classifier.from_settings


def _slow(self: Retriever, texts: Sequence[str], lexicon: Lexicon | None) -> Embedded:
    time.sleep(DELAY)
    return _embed(self, texts, lexicon)


async def _counted(self: MicroBatcher[Any, Any], items: Sequence[Any], *args: Any) -> list[Any]:
    for _ in items:
        print(f"slow_serve: {next(_submitted)} submitted", file=sys.stderr, flush=True)
    return await _submit(self, items, *args)


def _slow_load(*args: Any, **kwargs: Any) -> Classifier:
    print("slow_serve: loading", file=sys.stderr, flush=True)
    time.sleep(float(os.environ["SLOW_SERVE_LOAD_S"]))
    return _from_settings(*args, **kwargs)


if "SLOW_SERVE_LOAD_S" in os.environ:
    Classifier.from_settings = _slow_load  # type: ignore[method-assign]
Retriever.embed = _slow  # type: ignore[method-assign]
MicroBatcher.submit = _counted  # type: ignore[method-assign]
sys.exit(main(sys.argv[2:]))
