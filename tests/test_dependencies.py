"""Each entry point installs only what it imports: the router serves without the
evaluation, training and fitting libraries (the [eval], [train], [index] extras)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from qroute_indexer import run_index

from qroute.config import Settings
from qroute.errors import MissingDependency

ROOT = Path(__file__).resolve().parent.parent
# What the router must never import: plotting, metrics and fitting, training, parquet.
BLOCKED = ("matplotlib", "sklearn", "accelerate", "datasets", "pyarrow", "hypothesis")

SERVE = textwrap.dedent(
    """
    import asyncio, importlib.abc, sys

    BLOCKED = set(sys.argv[2].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"serving imported {name}")
            return None

    sys.meta_path.insert(0, Block())

    from qroute.config import load_settings
    from qroute.types import Query
    from qroute_server.app import RouterApp

    async def main():
        app = RouterApp(load_settings(sys.argv[1]))
        await app.start()
        await app.load()
        [prediction] = await app.classify([Query("코스닥 지수 알려줘")], None)
        await app.stop()
        print(prediction.label, prediction.reason)
        print("torch" in sys.modules)

    asyncio.run(main())
    """
)


async def test_the_router_serves_a_head_without_eval_train_or_fitting_packages(
    tmp_path: Path,
) -> None:
    config = tmp_path / "qroute.yaml"
    config.write_text(
        "retrieval: {mode: lexical}\n"
        "index: {head: true}\n"
        f"store: {{location: '{tmp_path / 'store'}', collection: deps}}\n"
        "server: {bind: '127.0.0.1:0', metrics_port: null}\n",
        encoding="utf-8",
    )
    settings = Settings(
        retrieval={"mode": "lexical"},
        index={"head": True},
        store={"location": str(tmp_path / "store"), "collection": "deps"},
    )
    await run_index(settings, ROOT / "examples" / "queries.csv", progress=False)
    result = subprocess.run(
        [sys.executable, "-c", SERVE, str(config), ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer, torch_loaded = result.stdout.strip().splitlines()[-2:]
    # The head answered (it is fitted with scikit-learn, scored without it).
    assert answer.startswith("금융 head:"), answer
    # Lexical mode loads no model: the model stack is not even imported.
    assert torch_loaded == "False"


def test_an_index_head_without_its_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    from qroute.routing.head import HeadData

    # None in sys.modules makes the import fail, as on an install without the extra.
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    data = HeadData()
    data.offer(["a", "b"], ["x", "y"], np.eye(2, dtype=np.float32), None)
    with pytest.raises(MissingDependency, match=r"pip install 'qroute\[index\]'"):
        data.fit(None, 1.0, morph_from=2**20)
