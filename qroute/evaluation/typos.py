"""Typo test sets: the slips Korean users make, applied to labelled queries.

Four kinds, each one edit: a space removed (띄어쓰기 붙여 쓰기), a space added inside a
word, one jamo of a syllable replaced by another of the same position, and a final
consonant (받침) dropped. A perturbed query keeps its label: how often the router's
answer stays the same under them is its label stability.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from qroute.types import Example

__all__ = ["KINDS", "Typo", "perturb", "typo_set"]

_BASE, _LAST = 0xAC00, 0xD7A3
_LEADS, _VOWELS, _TAILS = 19, 21, 28


def _is_syllable(char: str) -> bool:
    return _BASE <= ord(char) <= _LAST


def _split(char: str) -> tuple[int, int, int]:
    offset = ord(char) - _BASE
    return offset // (_VOWELS * _TAILS), (offset // _TAILS) % _VOWELS, offset % _TAILS


def _join(lead: int, vowel: int, tail: int) -> str:
    return chr(_BASE + (lead * _VOWELS + vowel) * _TAILS + tail)


def _space_removed(text: str, rng: random.Random) -> str | None:
    spaces = [i for i, c in enumerate(text) if c == " " and 0 < i < len(text) - 1]
    if not spaces:
        return None
    i = rng.choice(spaces)
    return text[:i] + text[i + 1 :]


def _space_added(text: str, rng: random.Random) -> str | None:
    inside = [i for i in range(1, len(text)) if not text[i - 1].isspace() and not text[i].isspace()]
    if not inside:
        return None
    i = rng.choice(inside)
    return text[:i] + " " + text[i:]


def _jamo_replaced(text: str, rng: random.Random) -> str | None:
    syllables = [i for i, c in enumerate(text) if _is_syllable(c)]
    if not syllables:
        return None
    i = rng.choice(syllables)
    lead, vowel, tail = _split(text[i])
    slots = ["lead", "vowel"] + (["tail"] if tail else [])
    slot = rng.choice(slots)
    if slot == "lead":
        lead = rng.choice([x for x in range(_LEADS) if x != lead])
    elif slot == "vowel":
        vowel = rng.choice([x for x in range(_VOWELS) if x != vowel])
    else:
        tail = rng.choice([x for x in range(1, _TAILS) if x != tail])
    return text[:i] + _join(lead, vowel, tail) + text[i + 1 :]


def _batchim_dropped(text: str, rng: random.Random) -> str | None:
    with_tail = [i for i, c in enumerate(text) if _is_syllable(c) and _split(c)[2]]
    if not with_tail:
        return None
    i = rng.choice(with_tail)
    lead, vowel, _ = _split(text[i])
    return text[:i] + _join(lead, vowel, 0) + text[i + 1 :]


_PERTURB: dict[str, Callable[[str, random.Random], str | None]] = {
    "space_removed": _space_removed,
    "space_added": _space_added,
    "jamo_replaced": _jamo_replaced,
    "batchim_dropped": _batchim_dropped,
}
KINDS = tuple(_PERTURB)


def perturb(text: str, kind: str, rng: random.Random) -> str | None:
    """``text`` with one typo of ``kind``, or None when it has no place for one."""
    try:
        return _PERTURB[kind](text, rng)
    except KeyError:
        raise ValueError(f"unknown typo kind {kind!r}; known: {', '.join(KINDS)}") from None


@dataclass(frozen=True, slots=True)
class Typo:
    example: Example  # the original row
    kind: str
    text: str  # the perturbed text


def typo_set(
    examples: Iterable[Example], kinds: Iterable[str] = KINDS, *, seed: int = 0
) -> Iterator[Typo]:
    """One typo of each kind per example (where it applies), reproducible by ``seed``."""
    rng = random.Random(seed)
    kinds = tuple(kinds)
    for example in examples:
        for kind in kinds:
            text = perturb(example.text, kind, rng)
            if text is not None and text != example.text:
                yield Typo(example, kind, text)
