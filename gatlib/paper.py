"""The paper's own numbers (Tables 1–3, §4.2), transcribed once into ``paper_numbers.json``.

Chapters and the scoreboard read them from here, so a paper value is typed in exactly one place.
Values are in percent, as printed in the paper.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

NUMBERS_FILE = Path(__file__).resolve().parent / "paper_numbers.json"


@lru_cache(maxsize=1)
def numbers() -> dict:
    return json.loads(NUMBERS_FILE.read_text())


def value(*keys: str):
    """A paper number by its path in ``paper_numbers.json``, e.g. ``value("table3", "original", "lsun")``."""
    node = numbers()
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"paper_numbers.json has no entry {'/'.join(keys[:depth + 1])}")
        node = node[key]
    return node
