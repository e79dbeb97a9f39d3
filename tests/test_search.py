from pathlib import Path

import pytest

from ingest.errors import ConfigError, KbError
from ingest.pipeline import ingest
from ingest.settings import load_settings
from kb_app.search import Searcher, SearchResult, parse_where, search
from tests.conftest import DATA, ROOT


def questions():
    """The cross-lingual questions: (question, language, expected file, page or None)."""
    rows = []
    for line in (ROOT / "tests" / "data" / "questions.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("data/"):
            expected, _, page = cells[2].partition(" (page ")
            rows.append((cells[0], cells[1], expected, int(page.rstrip(")")) if page else None))
    return rows


QUESTIONS = questions()


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory):
    settings = load_settings(chroma_path=tmp_path_factory.mktemp("search") / "chroma")
    assert ingest([DATA], settings).ok
    return settings


def test_question_table_is_cross_lingual():
    assert len(QUESTIONS) >= 8
    assert sum(1 for _, lang, f, _ in QUESTIONS if lang == "zh" and f.startswith("data/en/")) >= 5
    assert sum(1 for _, lang, f, _ in QUESTIONS if lang == "en" and f.startswith("data/zh/")) >= 3


@pytest.mark.parametrize(("question", "language", "expected", "page"), QUESTIONS,
                         ids=[q[2] + "-" + q[1] for q in QUESTIONS])
def test_cross_lingual_question_finds_the_other_language_passage_first(sample_kb, question, language, expected, page):
    results = search(question, sample_kb, k=3).results
    top = results[0]
    assert Path(top.source) == (ROOT / expected).resolve(), [(r.source, r.score) for r in results]
    if page:
        assert top.page == page


def test_results_are_ranked_and_carry_provenance(sample_kb):
    results = search("How hot should the water be for pour-over coffee?", sample_kb, k=5).results
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    top = results[0]
    assert top.file_type == "html" and top.title == "A Practical Guide to Brewing Coffee" and top.chunk_id
    # Each section is a chunk of its own: the pour-over section and the one with the temperature both rank.
    [answer] = [r for r in results if "90 to 96" in r.text]
    assert answer.title == top.title and "<p>" not in answer.text  # the loader's text, not the raw HTML
    from ingest.formats import load

    document_text = load(DATA / "en" / "coffee-brewing.html").documents[0].text
    for result in (top, answer):
        assert document_text[result.start : result.end] == result.text  # offsets point into the document


def test_where_filter(sample_kb):
    results = search("volcano", sample_kb, k=3, where={"file_type": "md"}).results
    assert results and all(r.file_type == "md" for r in results)


def test_where_is_parsed_from_json():
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_where("{nope")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_where("[1]")
    assert parse_where('{"file_type": "pdf"}') == {"file_type": "pdf"} and parse_where(None) is None


def test_searcher_refuses_another_model_and_empty_queries(sample_kb, tmp_path):
    with pytest.raises(ConfigError, match="built with model"):
        Searcher(load_settings(chroma_path=sample_kb.chroma_path, model="other", endpoint=["http://127.0.0.1:1/v1"]))
    with pytest.raises(KbError, match="empty"):
        search("   ", sample_kb)
    with pytest.raises(KbError, match="kb ingest"):
        search("anything", load_settings(chroma_path=tmp_path / "nothing"))


def test_neighbours_are_the_chunks_around_a_result_in_reading_order(sample_kb):
    from kb_app.search import Searcher

    finder = Searcher(sample_kb)
    results = finder.search("How do magma and subduction make volcanoes?", k=20, where={"file_type": "pdf"}).results
    assert results[0].source.endswith("volcanoes.pdf")
    # The last passage of page 1: its neighbours cross the page break.
    result = max((r for r in results if r.page == 1), key=lambda r: r.start)
    around = finder.neighbours(result)
    assert result.text in around and 1 < len(around) <= 3
    chunks = {c.text: c.metadata for c in finder.kb.chunks_of(result.source)}
    order = [(chunks[text]["page"], chunks[text]["chunk"]) for text in around]
    assert order == sorted(order) and {page for page, _ in order} == {1, 2}  # crosses the page break


def test_a_heading_finds_its_section_once_across_languages(sample_kb):
    """The section heading "Inverters: From DC to AC", asked in Chinese: found by its heading entry, shown as
    the chunk the section starts in, and that passage is not listed a second time by its own vector."""
    finder = Searcher(sample_kb)
    results = finder.search("逆变器：从直流电到交流电", k=8).results
    top = results[0]
    assert top.source.endswith("solar-power.md") and top.heading == "Inverters: From DC to AC"
    assert "## Inverters: From DC to AC" in top.text
    passages = [(r.source, r.page, r.start, r.end) for r in results]
    assert len(passages) == len(set(passages)) == 8
    assert top.text in finder.neighbours(top)
    # Every heading entry keeps its section's passage and offsets, and its own number after the chunks.
    chunks = finder.kb.chunks_of(top.source)
    by_number = {c.metadata["chunk"]: c for c in chunks}
    entries = [c for c in chunks if "heading" in c.metadata]
    assert sorted(c.metadata["heading"] for c in entries) == sorted([
        "How Photovoltaic Solar Panels Work", "Silicon Solar Cells", "The Photovoltaic Effect",
        "Inverters: From DC to AC", "Efficiency", "Cleaning and Maintenance"])
    for entry in entries:
        section = by_number[entry.metadata["section"]]
        assert "heading" not in section.metadata and entry.metadata["chunk"] > max(
            c.metadata["chunk"] for c in chunks if "heading" not in c.metadata)
        assert (entry.text, entry.metadata["start"], entry.metadata["end"]) == (
            section.text, section.metadata["start"], section.metadata["end"])
        assert entry.metadata["heading"] in section.text


@pytest.mark.parametrize(("fields", "shown"), [
    ({"file_type": "pdf", "page": 4}, "page 4"),
    ({"file_type": "pptx", "page": 3}, "slide 3"),
    ({"file_type": "xlsx", "page": 2, "sheet": "Budget"}, "sheet Budget"),
    ({"file_type": "epub", "page": 5, "chapter": "The Voyage"}, "chapter The Voyage"),
    ({"file_type": "md", "page": None}, ""),
])
def test_a_result_says_where_it_is_as_a_reader_would(fields, shown):
    """The location the CLI, the UI, the API and answers show: slide, sheet and chapter by their names."""
    result = SearchResult(rank=1, score=0.5, text="t", source="/d/f", chunk_id="c", title="f", start=None,
                          end=None, **fields)
    assert result.location == shown and result.to_dict()["location"] == shown
