"""bench/reuse.py on a small document against the simulated server: the figures it prints come from real runs,
and they say what the docs say they say (the edit embeds a handful of entries with reuse, all of them without)."""

from __future__ import annotations

import pytest

from bench.reuse import EDIT, edit_middle, long_manual, run
from ingest.settings import load_settings

pytestmark = pytest.mark.slow


def test_the_edit_embeds_a_handful_with_reuse_and_everything_without():
    runs = {r.what.strip("*"): r for r in run(chunks=60, embedded=False)}
    first = runs["first ingest"]
    before = runs["one-paragraph edit, every chunk embedded (before; --force)"]
    after = runs["one-paragraph edit, with reuse (kb now)"]
    assert first.embedded == first.chunks > 60 and before.chunks == after.chunks  # the edit may change the count
    assert before.embedded == before.chunks and before.reused == 0
    assert 1 <= after.embedded <= 3 and after.reused == after.chunks - after.embedded
    assert after.embed_seconds < before.embed_seconds


def test_the_edit_rewrites_one_paragraph_of_prose():
    text = long_manual(60, load_settings())
    edited = edit_middle(text)
    assert EDIT in edited and EDIT not in text
    removed = set(text.split("\n\n")) - set(edited.split("\n\n"))
    assert len(removed) == 1 and not next(iter(removed)).startswith(("#", "|", "`"))
