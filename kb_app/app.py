"""kb in the browser: search across languages, upload documents, manage the library.

Start it with `kb ui` (or `streamlit run kb_app/app.py`). Settings come from the same typed object as the
CLI (`KB_*` variables, `kb.toml`); every operation is a library call the CLI also uses. Document text is
always shown as text: it is HTML-escaped before any markup kb adds (highlights), so nothing inside a
document renders or runs.
"""

from __future__ import annotations

import hmac
import html
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.errors import KbError
from ingest.lock import write_lock
from ingest.pipeline import FileOutcome, IngestReport, ingest
from ingest.settings import Settings, load_settings
from ingest.store import KnowledgeBase, list_knowledge_bases, make_client
from kb_app import uploads
from kb_app.search import SearchResult, Searcher

PAGES = ["Search", "Upload", "Library", "Quality", "Settings"]

CARD_STYLE = """
<style>
.kb-text { white-space: pre-wrap; font-family: inherit; line-height: 1.5; margin: 0.2rem 0; }
.kb-text mark { background: #ffe58a; padding: 0 1px; border-radius: 2px; }
.kb-head { font-size: 0.95rem; margin-bottom: 0.2rem; }
.kb-score { font-family: monospace; color: #555; }
.kb-source { color: #2e6b30; }
.kb-stages { font-family: monospace; font-size: 0.8rem; color: #666; margin-bottom: 0.2rem; }
</style>
"""


# -- settings and shared handles -------------------------------------------------------------


def settings() -> Settings:
    """The process's settings, with the collection chosen on the Settings page."""
    base = load_settings()
    chosen = st.session_state.get("collection")
    return base.model_copy(update={"collection": chosen}) if chosen else base


@st.cache_resource(show_spinner=False)
def _searcher(key: str, _settings: Settings) -> Searcher:
    return Searcher(_settings)


def searcher(current: Settings) -> Searcher:
    key = f"{current.chroma_url or current.chroma_path}|{current.collection}|{current.endpoint}|{current.model}"
    return _searcher(key, current)


def knowledge_base(current: Settings) -> KnowledgeBase:
    return KnowledgeBase.open(current)


# -- rendering -------------------------------------------------------------------------------


def query_terms(query: str) -> list[str]:
    """Words of two or more letters; for Chinese and Japanese runs, every pair of characters."""
    terms: set[str] = set()
    for word in re.findall(r"\w+", query):
        cjk = re.findall(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+", word)
        if cjk:
            for run in cjk:
                terms.update(run[i : i + 2] for i in range(max(1, len(run) - 1)))
            word = re.sub(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+", " ", word)
        terms.update(w for w in word.split() if len(w) >= 2)
    return sorted(terms, key=len, reverse=True)


def highlight(text: str, query: str) -> str:
    """`text` escaped as HTML, with the query's terms wrapped in <mark> where they occur."""
    terms = query_terms(query)
    if not terms:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    out, position = [], 0
    for match in pattern.finditer(text):
        out.append(html.escape(text[position : match.start()]))
        out.append(f"<mark>{html.escape(match.group(0))}</mark>")
        position = match.end()
    out.append(html.escape(text[position:]))
    return "".join(out)


def show_text(text: str, query: str = "") -> None:
    st.html(f'{CARD_STYLE}<div class="kb-text">{highlight(text, query)}</div>')


def where_filter(types: list[str], sources: list[str], languages: list[str]) -> dict[str, Any] | None:
    clauses = [
        {field: {"$in": values}}
        for field, values in (("file_type", types), ("source", sources), ("language", languages))
        if values
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def display_name(source: str) -> str:
    return Path(source).name


def show_result(result: SearchResult, query: str, finder: Searcher) -> None:
    where = display_name(result.source) + (f", page {result.page}" if result.page else "")
    with st.container(border=True):
        st.html(
            f'{CARD_STYLE}<div class="kb-head" data-query="{html.escape(query, quote=True)}"><b>{result.rank}.</b> <span class="kb-score">{result.score:.3f}</span>'
            f" &nbsp; <b>{html.escape(result.title)}</b> &middot; "
            f'<span class="kb-source">{html.escape(where)}</span>'
            + (f' &middot; <span class="kb-heading">matched the heading “{html.escape(result.heading)}”</span>'
               if result.heading else "")
            + "</div>"
            + (f'<div class="kb-stages">{html.escape(result.stages())}</div>' if result.fused_score is not None
               or result.rerank_score is not None else "")
        )
        preview = result.text if len(result.text) <= 600 else result.text[:600] + " …"
        show_text(preview, query)
        with st.expander("Full chunk and its neighbours"):
            st.caption(html.escape(result.source))
            for text in finder.neighbours(result) or [result.text]:
                show_text(text, query)
                st.divider()


# -- pages -----------------------------------------------------------------------------------


def search_page(current: Settings) -> None:
    st.header("Search")
    kb = knowledge_base(current)
    documents = kb.documents()
    if not documents or kb.count() == 0:
        st.info(
            f"The collection **{current.collection}** has no documents yet. Add some on the **Upload** page, "
            "or run `kb ingest PATH` in a terminal."
        )
        return
    query = st.text_input("Ask a question in any language", key="query", placeholder="e.g. 太阳能电池板是怎样发电的？")
    modes = ["dense", "hybrid"] + (["hybrid + rerank"] if current.rerank_endpoint else [])
    default = "hybrid + rerank" if current.rerank and current.rerank_endpoint else current.search_mode
    ranking = st.radio("Ranking", modes, index=modes.index(default), horizontal=True, key="ranking",
                       help="dense: vectors alone · hybrid: vectors and BM25 keywords, fused by reciprocal rank"
                            + (" · hybrid + rerank: the best of those reordered by the reranker"
                               if current.rerank_endpoint else " · reranking needs KB_RERANK_ENDPOINT"))
    with st.expander("Filters", expanded=False):
        k = st.slider("Results", 1, 20, 5, key="top_k")
        types = st.multiselect("File type", sorted({d.file_type for d in documents.values()}), key="types")
        sources = st.multiselect(
            "Document", sorted(documents), format_func=display_name, key="sources"
        )
        languages = st.multiselect(
            "Language", sorted({d.language for d in documents.values() if d.language}), key="languages"
        )
    if not query.strip():
        st.caption(f"{len(documents)} documents, {kb.count()} passages in **{current.collection}**.")
        return
    finder = searcher(current)
    started = time.perf_counter()
    try:
        response = finder.search(query, k, where_filter(types, sources, languages),
                                 mode=ranking.split(" ")[0], rerank=ranking.endswith("rerank"))
    except KbError as exc:
        st.error(str(exc))
        return
    elapsed = (time.perf_counter() - started) * 1000
    if not response.results:
        st.warning("No results: no passage matches these filters. Clear some filters and search again.")
        return
    st.caption(f"{len(response.results)} results in {elapsed:.0f} ms ({response.mode}: {response.timing_summary()})")
    for result in response.results:
        show_result(result, query, finder)


class StreamlitProgress:
    """The pipeline's progress as bars: one for the run, one for each file."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.overall = st.progress(0.0, text="Starting…")
        self.bars = {source: st.progress(0.0, text=f"{name}: waiting") for source, name in names.items()}
        self.files = self.total_files = self.chunks = self.planned_chunks = 0

    def _overall(self) -> None:
        fraction = self.files / self.total_files if self.total_files else 1.0
        self.overall.progress(
            min(1.0, fraction), text=f"{self.files}/{self.total_files} files · {self.chunks}/{self.planned_chunks} passages"
        )

    def start(self, files: int, total_bytes: int) -> None:
        self.total_files = files
        self._overall()

    def planned(self, chunks: int, tokens: int) -> None:
        self.planned_chunks += chunks
        self._overall()

    def embedded(self, chunks: int, tokens: int) -> None:
        self.chunks += chunks
        self._overall()

    def file_progress(self, source: str, done: int, total: int) -> None:
        if source in self.bars:
            self.bars[source].progress(done / total, text=f"{self.names[source]}: {done}/{total} passages")

    def file_done(self, outcome: FileOutcome, size: int) -> None:
        self.files += 1
        self._overall()
        if outcome.source in self.bars:
            self.bars[outcome.source].progress(1.0, text=f"{self.names[outcome.source]}: {describe(outcome)}")

    def waiting(self, message: str) -> None:
        st.info(message)


def describe(outcome: FileOutcome) -> str:
    if outcome.status == "ingested":
        text = f"ingested, {outcome.chunks} passages"
        return text + (f" ({'; '.join(outcome.warnings)})" if outcome.warnings else "")
    if outcome.status == "unchanged":
        return f"unchanged, already in the library ({outcome.chunks} passages)"
    return f"{outcome.status}: {outcome.reason}"


def upload_page(current: Settings) -> None:
    st.header("Upload")
    st.write(
        f"Drop PDF, text, Markdown, HTML or reStructuredText files (up to {current.max_upload_files} at once, "
        f"{current.max_upload_mb} MB each). They are kept in `{current.upload_dir}` and added to **{current.collection}**."
    )
    round_ = st.session_state.setdefault("upload_round", 0)
    files = st.file_uploader(
        "Documents", type=["pdf", "txt", "md", "markdown", "html", "htm", "rst"],
        accept_multiple_files=True, key=f"uploader-{round_}",
    )
    if files and st.button(f"Ingest {len(files)} file{'s' if len(files) > 1 else ''}", type="primary", key="ingest"):
        ingest_uploads(current, files)
        st.session_state["upload_round"] = round_ + 1  # a fresh, empty uploader for the next batch
    report = st.session_state.get("upload_report")
    if report:
        st.subheader("Last upload")
        st.dataframe(report, hide_index=True, width="stretch")


def ingest_here(paths: list[str], current: Settings, **options: Any) -> IngestReport:
    """`ingest` as the UI runs it. This process keeps the embedded store open for searches, so writes go
    through the same client; and a browser does not wait behind another writer (`kb ingest` on the same
    store): it says so at once."""
    return ingest(paths, current.model_copy(update={"lock_wait": 0.0}), store_process=False, **options)


def ingest_uploads(current: Settings, files: list[Any]) -> None:
    rows: list[dict[str, Any]] = []
    if len(files) > current.max_upload_files:
        st.error(f"{len(files)} files is more than the {current.max_upload_files} accepted at once (KB_MAX_UPLOAD_FILES).")
        return
    current.upload_dir.mkdir(parents=True, exist_ok=True)
    saved: dict[str, str] = {}
    for file in files:
        reason = uploads.check(file.name, file.size, current.max_upload_mb)
        if reason is None:
            try:
                target = uploads.place(current.upload_dir, file.name)
                target.write_bytes(file.getvalue())
                saved[str(target)] = file.name
                continue
            except (ValueError, OSError) as exc:
                reason = str(exc)
        rows.append({"file": file.name, "outcome": "refused", "passages": 0, "detail": reason})
    if saved:
        progress = StreamlitProgress(saved)
        report = ingest_here(list(saved), current, progress=progress)
        for outcome in report.outcomes:
            rows.append({
                "file": saved.get(outcome.source, display_name(outcome.source)),
                "outcome": outcome.status,
                "passages": outcome.chunks,
                "detail": outcome.reason or "; ".join(outcome.warnings),
            })
        _searcher.clear()
    st.session_state["upload_report"] = rows
    failed = [r for r in rows if r["outcome"] in ("failed", "refused")]
    if failed:
        st.error(f"{len(failed)} of {len(rows)} files were not added: see the table below.")
    else:
        st.success(f"Done: {len(rows)} files.")


def library_page(current: Settings) -> None:
    st.header("Library")
    kb = knowledge_base(current)
    documents = kb.documents()
    if not documents:
        st.info(f"No documents in **{current.collection}** yet.")
        return
    rows = [
        {
            "name": display_name(d.source), "type": d.file_type, "language": d.language or "",
            "pages": d.pages, "passages": d.chunks, "tokens": d.tokens,
            "ingested at": d.ingested_at, "source": d.source,
        }
        for d in sorted(documents.values(), key=lambda d: display_name(d.source).lower())
    ]
    st.dataframe(rows, hide_index=True, width="stretch")

    left, right = st.columns(2)
    with left:
        st.caption("Documents by type")
        by_type: dict[str, int] = {}
        for d in documents.values():
            by_type[d.file_type] = by_type.get(d.file_type, 0) + 1
        st.bar_chart({"documents": by_type}, x_label="type", y_label="documents")
    with right:
        st.caption("Passage length (tokens)")
        chunks, _ = kb.all_chunks(with_text=False)
        lengths = [int(c.metadata.get("tokens", 0)) for c in chunks]
        if lengths:
            import numpy as np

            counts, edges = np.histogram(lengths, bins=min(12, max(1, len(set(lengths)))))
            st.bar_chart({"passages": {f"{int(edges[i])}-{int(edges[i + 1])}": int(c) for i, c in enumerate(counts)}},
                         x_label="tokens", y_label="passages")

    st.subheader("Manage a document")
    source = st.selectbox("Document", sorted(documents), format_func=display_name, key="manage")
    delete, reindex = st.columns(2)
    if delete.button("Delete", key="delete"):
        with write_lock(current, wait=0):
            removed = kb.delete_document(source)
        path = Path(source)
        if path.parent.resolve() == current.upload_dir.resolve() and path.exists():
            path.unlink()  # an uploaded copy would come back with the next `kb ingest data/`
        _searcher.clear()
        st.session_state["library_message"] = f"Deleted {display_name(source)} ({removed} passages)."
        st.rerun()
    if reindex.button("Re-index", key="reindex"):
        if not Path(source).exists():
            st.error(f"{source} no longer exists on disk: delete it instead.")
        else:
            with st.spinner(f"Re-indexing {display_name(source)}…"):
                report = ingest_here([source], current, force=True)
            outcome = report.outcomes[0]
            (st.success if outcome.status == "ingested" else st.error)(f"{display_name(source)}: {describe(outcome)}")
    message = st.session_state.pop("library_message", None)
    if message:
        st.success(message)


def quality_page(current: Settings) -> None:
    """`kb eval` in the browser: score a judged set (or parallel documents) with these settings, and compare
    runs by their recall@k curves."""
    from kb_app.evaluate import evaluate, load_beir, parallel_set

    st.header("Retrieval quality")
    st.write("Score search on a judged query set in the BEIR layout (`corpus.jsonl`, `queries.jsonl`, "
             "`qrels/test.tsv`), or on the same documents in two languages: queries from one folder's titles and "
             "first paragraphs, each judged against its namesake in the other. Folders are on the server.")
    path = st.text_input("Query set (or folder of query-language documents)", key="eval_path")
    targets = st.text_input("Parallel documents: folder of the target-language files (optional)", key="eval_targets")
    runs: list[dict[str, Any]] = st.session_state.setdefault("eval_runs", [])
    if path.strip() and st.button("Run evaluation", type="primary", key="eval_run"):
        evalset = (parallel_set(path.strip(), targets.strip()) if targets.strip()
                   else load_beir(path.strip()))
        for reason in evalset.skipped:
            st.warning(f"Not asked: {reason}")
        with st.spinner(f"Ingesting {len(evalset.corpus)} documents and asking {len(evalset.queries)} queries…"):
            report = evaluate(evalset, current.model_copy(update={"collection": f"eval-{evalset.name}"}),
                              Path.home() / ".cache" / "kb" / "eval", run_ingest=ingest_here)
        label = f"{len(runs) + 1}. {report.set} · {current.chunk_tokens} tok"
        runs.append({"label": label, **report.to_dict()})
    if not runs:
        st.info("No evaluation run yet in this session.")
        return
    st.dataframe([{"run": r["label"], "queries": r["queries"], "documents": r["documents"], "model": r["model"],
                   **{name: value for name, value in r["scores"].items() if name != "queries"}} for r in runs],
                 hide_index=True, width="stretch")
    st.subheader("Recall@k")
    st.caption("The share of relevant documents found in the top k, for k from 1 to 100.")
    import pandas as pd

    depth = max(len(r["recall_curve"]) for r in runs)
    curves = pd.DataFrame({r["label"]: r["recall_curve"] for r in runs}, index=pd.RangeIndex(1, depth + 1, name="k"))
    st.line_chart(curves, x_label="k", y_label="recall@k")
    last = runs[-1]
    if last["by_kind"]:
        st.dataframe([{"queries": kind, **scores} for kind, scores in last["by_kind"].items()], hide_index=True)


def endpoint_health(url: str, api_key: str | None) -> str:
    import httpx

    base = url if re.search(r"/v\d+$", url) else f"{url}/v1"
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        response = httpx.get(f"{base}/models", timeout=3, headers=headers)
        if response.status_code == 200:
            models = [m.get("id") for m in response.json().get("data", [])]
            return f"✅ up, serving {', '.join(map(str, models)) or 'no models listed'}"
        return f"⚠️ HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        return f"❌ unreachable ({type(exc).__name__})"


def settings_page(current: Settings) -> None:
    st.header("Settings and status")
    client = make_client(current)
    names = list_knowledge_bases(client)
    options = sorted(set(names) | {current.collection})
    chosen = st.selectbox("Collection", options, index=options.index(current.collection), key="choose")
    new = st.text_input("…or create a new collection", key="new_collection", placeholder="letters, digits, . _ -")
    if st.button("Use this collection", key="use"):
        name = new.strip() or chosen
        try:
            KnowledgeBase(client, name)  # validates the name
        except KbError as exc:
            st.error(str(exc))
        else:
            st.session_state["collection"] = name
            st.rerun()

    kb = KnowledgeBase(client, current.collection)
    spec = kb.spec
    st.subheader(f"Collection {current.collection}")
    if spec is None:
        st.info("Not created yet: it is created by the first upload or `kb ingest`.")
    else:
        st.table({
            "model": [spec.model], "dimension": [spec.dimension], "instruction": [spec.instruction],
            "query task": [spec.query_task if spec.instruction == "qwen3" else "—"], "tokenizer": [spec.tokenizer],
            "chunking": [f"{spec.chunk_tokens} tokens, {spec.overlap} overlap"],
            "documents": [len(kb.documents())], "passages": [kb.count()],
        })
    st.subheader("Embedding")
    if not current.endpoint:
        st.write("Embedded model, in this process: no server needed.")
    key = current.api_key.get_secret_value() if current.api_key else None
    for url in current.endpoint:
        st.write(f"`{url}` — {endpoint_health(url, key)}")
    st.subheader("All settings")
    st.caption("From KB_* environment variables and kb.toml; the API key is never shown.")
    st.json(current.public_dict())


# -- sign-in ---------------------------------------------------------------------------------

WRONG_PASSWORD_DELAY = 1.0  # seconds: slows guessing without bothering someone who mistyped


def signed_in(current: Settings) -> bool:
    """True once this browser session has given KB_UI_PASSWORD, or when none is set. Until then only
    the sign-in form is shown: no page, no collection name, no setting."""
    if current.ui_password is None or st.session_state.get("signed_in"):
        return True
    st.title("kb")
    with st.form("sign-in"):
        given = st.text_input("Password", type="password", key="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        expected = current.ui_password.get_secret_value().encode()
        with _sign_in_gate():  # one try at a time for the whole server: guesses from many tabs queue up
            right = hmac.compare_digest(given.encode(), expected)
            if not right:
                time.sleep(WRONG_PASSWORD_DELAY)
        if right:
            st.session_state["signed_in"] = True
            del st.session_state["password"]
            st.rerun()
        st.error("Wrong password.")
    return False


@st.cache_resource(show_spinner=False)
def _sign_in_gate() -> threading.Lock:
    return threading.Lock()


def main() -> None:
    st.set_page_config(page_title="kb", page_icon="📚", layout="wide")
    try:
        current = settings()
    except KbError as exc:
        # Before sign-in nothing about the setup is shown: the reason goes to the server's log.
        print(f"kb UI: {exc}", file=sys.stderr)
        st.error("kb cannot start: its settings are invalid (the reason is in the server's log).")
        return
    if not signed_in(current):
        return
    with st.sidebar:
        st.title("kb")
        page = st.radio("Page", PAGES, key="page", label_visibility="collapsed")
    try:
        st.sidebar.caption(f"Collection: **{current.collection}**")
        {"Search": search_page, "Upload": upload_page, "Library": library_page, "Quality": quality_page,
         "Settings": settings_page}[page](current)
    except KbError as exc:
        st.error(str(exc))
    except Exception as exc:  # a message, never a traceback in the page
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")


main()
