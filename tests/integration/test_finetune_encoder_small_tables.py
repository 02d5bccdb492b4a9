"""``qroute finetune-encoder`` on a table whose training rows give its loss nothing to
learn from (one row per label): a one-line error naming the table, not a traceback from
sentence-transformers' sampler or a "fine-tuned" model trained for 0 steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qroute.config import EncoderSettings
from qroute.errors import TableError
from qroute.testing import TinyModels, build_tiny_models
from qroute.training.encoder import EncoderFinetuneOptions, finetune_encoder
from qroute.types import Example

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = [f"w{i}x" for i in range(14)]
# One row per label: no label has two training rows to pair or to group.
ONE_EACH = [
    Example(f"{WORDS[i]} {WORDS[i + 1]}", f"L{i}", f"r{i}", "t.csv", i + 2) for i in range(12)
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models([e.text for e in ONE_EACH], tmp_path_factory.mktemp("small-ft"))


@pytest.mark.parametrize("loss", ["mnrl", "triplet"])
def test_one_row_per_label_is_a_table_error(tmp_path: Path, models: TinyModels, loss: str) -> None:
    options = EncoderFinetuneOptions(max_steps=3, batch_size=4, progress=False, dev_fraction=0.3)
    options = dataclasses.replace(options, loss=loss)  # type: ignore[arg-type]
    out = tmp_path / "out"
    with pytest.raises(TableError, match=r"t\.csv: .*two") as raised:
        finetune_encoder(
            ONE_EACH, EncoderSettings(model=str(models.encoder)), out, options, source="t.csv"
        )
    assert loss in str(raised.value)
    assert not out.exists()  # nothing written that would pass for a fine-tuned model
