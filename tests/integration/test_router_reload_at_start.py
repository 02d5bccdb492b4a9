"""A config file changed while the router loads its models (minutes for a hub download)
is applied once it serves, not taken for the file it started with."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from pathlib import Path

from qroute_indexer import run_index
from qroute_server.app import RouterApp
from ruamel.yaml import YAML

from qroute.config import Settings, load_settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.testing import BagOfWordsEncoder
from tests.integration.test_decisions import KNN, ROWS


async def test_a_config_change_while_the_models_load_is_applied(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    table = tmp_path / "table.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(ROWS)
    config = tmp_path / "qroute.yaml"
    yaml = YAML(typ="safe", pure=True)
    yaml.dump(
        make_settings(router=KNN, zero_shot={"method": "off"}).model_dump(mode="json"), config
    )
    settings = load_settings(config)
    await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)
    app = RouterApp(settings, config)
    await app.start()
    try:
        store = EmbeddedStore(settings.store.location, settings.store.collection)

        def load_models() -> Classifier:
            # The ConfigMap is updated while the models load.
            data = yaml.load(config)
            data["router"]["similarity_threshold"] = 0.42
            yaml.dump(data, config)
            return Classifier(settings, BagOfWordsEncoder(), None, store)

        await app.load(load_models)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while app.settings.router.similarity_threshold != 0.42:
            assert loop.time() < deadline, "the change made during the load was never applied"
            await asyncio.sleep(0.05)
        classifier = app.classifier
        assert classifier is not None and classifier.settings.router.similarity_threshold == 0.42
    finally:
        await app.stop(grace=0)
