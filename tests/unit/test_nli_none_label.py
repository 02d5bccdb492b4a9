"""table.none_label in the NLI fine-tune: out-of-scope rows contradict the labels."""

from __future__ import annotations

from qroute.config import ZeroShotSettings
from qroute.training.nli_pairs import FinetuneOptions, prepare_table
from qroute.types import Example

ZERO_SHOT = ZeroShotSettings(template="This is about {label}.")


def _rows() -> list[Example]:
    rows = []
    for label in ("weather", "finance", "music", "oos"):
        for i in range(10):
            rows.append(Example(f"{label} text {i}", label, f"{label}-{i}", "t.csv", len(rows) + 2))
    return rows


def test_out_of_scope_rows_are_premises_that_contradict_every_label() -> None:
    options = FinetuneOptions(negatives=2, progress=False)
    data = prepare_table(_rows(), ZERO_SHOT, None, options, source="t.csv", none_label="oos")
    pairs = data.train + data.dev
    assert all("oos" not in p.hypothesis for p in pairs)
    none_pairs = [p for p in pairs if p.premise.startswith("oos ")]
    assert none_pairs and all(p.label == "contradiction" for p in none_pairs)
    # negatives + 1 labels per out-of-scope row, each once.
    per_row: dict[str, list[str]] = {}
    for p in none_pairs:
        per_row.setdefault(p.premise, []).append(p.hypothesis)
    assert all(len(h) == 3 == len(set(h)) for h in per_row.values())
    assert data.counts["labels"] == 3 and data.counts["none_rows"] == 10
    assert all(case.label != "oos" and "oos" not in case.candidates for case in data.dev_cases)
