"""The facade a server shares between threads: searches side by side from many threads, each with a searcher
of its own, the same answers as one at a time; passages by id; unknown collections and ids said."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ingest.errors import SearchError
from ingest.pipeline import ingest
from ingest.settings import load_settings
from kb_app.service import KnowledgeService
from tests.conftest import DATA

QUESTIONS = ["太阳能电池板是怎样把阳光变成电的？", "How do volcanoes form?", "绿茶是怎么制作的？",
             "Why does sourdough rise?"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    store = tmp_path_factory.mktemp("service") / "chroma"
    settings = load_settings(chroma_path=store)
    assert ingest([DATA], settings).ok
    return KnowledgeService(settings, parallel=2)


def test_searches_from_many_threads_run_side_by_side_and_agree(service):
    alone = {q: [r.chunk_id for r in service.search(q, 3).results] for q in QUESTIONS}
    busy, most, lock = [0], [0], threading.Lock()
    original = service.searcher

    def counted(collection=None):  # noqa: ANN001, ANN202 - wraps the context manager to count overlaps
        manager = original(collection)

        class Counting:
            def __enter__(self):  # noqa: ANN204
                found = manager.__enter__()
                with lock:
                    busy[0] += 1
                    most[0] = max(most[0], busy[0])
                return found

            def __exit__(self, *exc):  # noqa: ANN002, ANN204
                with lock:
                    busy[0] -= 1
                return manager.__exit__(*exc)

        return Counting()

    service.searcher = counted
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda q: (q, [r.chunk_id for r in service.search(q, 3).results]),
                                    QUESTIONS * 6))
    finally:
        del service.searcher
    assert all(ids == alone[q] for q, ids in answers)
    assert most[0] == 2 and service._built["knowledge"] == 2  # two at once, never more than `parallel`


def test_a_passage_by_id_with_its_neighbours_and_what_is_not_there(service):
    first = service.search(QUESTIONS[0], 1).results[0]
    passage = service.passage(first.chunk_id, around=1)
    assert passage.text == first.text and passage.source == first.source and first.text in passage.neighbours
    with pytest.raises(SearchError, match="no passage 'nope'"):
        service.passage("nope")
    with pytest.raises(SearchError, match="'absent' is empty or does not exist"):
        service.search("x", collection="absent")
    assert service._built.get("absent", 0) == 0  # a searcher that could not be built is not counted
