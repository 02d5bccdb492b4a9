"""The typo generator makes exactly the one edit each kind names."""

from __future__ import annotations

import random
import unicodedata

import pytest

from qroute.evaluation.typos import KINDS, perturb, typo_set
from qroute.types import Example


def _jamo(text: str) -> list[str]:
    return list(unicodedata.normalize("NFD", text))


@pytest.mark.parametrize("seed", range(20))
def test_each_kind_makes_one_edit(seed: int) -> None:
    text = "서귀포 맛집 알려줘"
    rng = random.Random(seed)
    removed = perturb(text, "space_removed", rng)
    assert (
        removed is not None
        and removed.count(" ") == 1
        and removed.replace(" ", "") == "서귀포맛집알려줘"
    )
    added = perturb(text, "space_added", rng)
    assert (
        added is not None and added.count(" ") == 3 and added.replace(" ", "") == "서귀포맛집알려줘"
    )

    replaced = perturb(text, "jamo_replaced", rng)
    assert replaced is not None and len(replaced) == len(text)
    changed = [(a, b) for a, b in zip(text, replaced, strict=True) if a != b]
    assert len(changed) == 1
    before, after = (_jamo(c) for c in changed[0])
    if len(before) == len(after):  # a lead, vowel or tail swapped for another
        assert sum(1 for x, y in zip(before, after, strict=True) if x != y) == 1

    dropped = perturb(text, "batchim_dropped", rng)
    assert dropped is not None
    [(a, b)] = [(a, b) for a, b in zip(text, dropped, strict=True) if a != b]
    assert _jamo(b) == _jamo(a)[:2]  # the same syllable without its final consonant


def test_kinds_that_do_not_apply_are_left_out() -> None:
    rng = random.Random(0)
    assert perturb("날씨", "space_removed", rng) is None  # no space to remove
    assert perturb("가나다", "batchim_dropped", rng) is None  # no 받침 to drop
    assert perturb("hello world", "jamo_replaced", rng) is None
    with pytest.raises(ValueError, match="unknown typo kind"):
        perturb("날씨", "swap", rng)


def test_typo_sets_are_reproducible_and_keep_labels() -> None:
    rows = [Example("내일 날씨 알려줘", "날씨", "r1", "t.csv", 2)]
    first = list(typo_set(rows, seed=3))
    assert [t.kind for t in first] == list(KINDS)
    assert first == list(typo_set(rows, seed=3))
    assert all(t.example.label == "날씨" and t.text != rows[0].text for t in first)
