"""The Quality page: `kb eval` in the browser, on folders under the evaluation root only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from ingest.errors import EvalError
from ingest.settings import Settings
from kb_app.evaluate import EVAL_WORK, evaluate, load_beir, parallel_set
from kb_app.ui.common import ingest_here


def eval_folder(given: str, root: Path) -> Path:
    """The folder `given` names, taken under `root` when relative. Refused (EvalError) when it lies outside
    `root` once both are resolved, so neither `..` nor a symlink inside the root leads elsewhere on the server."""
    base = root.resolve()
    folder = (base / given).resolve()
    if not folder.is_relative_to(base):
        raise EvalError(f"{given} is outside the evaluation folder {base} (KB_EVAL_DIR): "
                        "the Quality page reads only folders under it.")
    return folder


def quality_page(current: Settings) -> None:
    """`kb eval` in the browser: score a judged set (or parallel documents) with these settings, and compare
    runs by their recall@k curves."""
    st.header("Retrieval quality")
    st.write("Score search on a judged query set in the BEIR layout (`corpus.jsonl`, `queries.jsonl`, "
             "`qrels/test.tsv`), or on the same documents in two languages: queries from one folder's titles and "
             "first paragraphs, each judged against its namesake in the other. Folders are on the server, under "
             f"`{current.eval_dir.resolve()}` (KB_EVAL_DIR).")
    path = st.text_input("Query set (or folder of query-language documents)", key="eval_path")
    targets = st.text_input("Parallel documents: folder of the target-language files (optional)", key="eval_targets")
    runs: list[dict[str, Any]] = st.session_state.setdefault("eval_runs", [])
    if path.strip() and st.button("Run evaluation", type="primary", key="eval_run"):
        runs.append(run_evaluation(current, path.strip(), targets.strip(), len(runs) + 1))
    if not runs:
        st.info("No evaluation run yet in this session.")
        return
    show_runs(runs)


def run_evaluation(current: Settings, path: str, targets: str, number: int) -> dict[str, Any]:
    """One run on the folders typed (each checked against the root), as a row of the session's runs."""
    queries = eval_folder(path, current.eval_dir)
    evalset = (parallel_set(queries, eval_folder(targets, current.eval_dir), current.include, current.exclude)
               if targets else load_beir(queries))
    for reason in evalset.skipped:
        st.warning(f"Not asked: {reason}")
    with st.spinner(f"Ingesting {len(evalset.corpus)} documents and asking {len(evalset.queries)} queries…"):
        report = evaluate(evalset, current.model_copy(update={"collection": f"eval-{evalset.name}"}),
                          EVAL_WORK, run_ingest=ingest_here)
    return {"label": f"{number}. {report.set} · {current.chunk_tokens} tok", **report.to_dict()}


def show_runs(runs: list[dict[str, Any]]) -> None:
    """The session's runs side by side: a table of scores, one recall@k curve each, the last run by kind."""
    st.dataframe([{"run": r["label"], "queries": r["queries"], "documents": r["documents"], "model": r["model"],
                   **{name: value for name, value in r["scores"].items() if name != "queries"}} for r in runs],
                 hide_index=True, width="stretch")
    st.subheader("Recall@k")
    st.caption("The share of relevant documents found in the top k, for k from 1 to 100.")
    depth = max(len(r["recall_curve"]) for r in runs)
    curves = pd.DataFrame({r["label"]: r["recall_curve"] for r in runs}, index=pd.RangeIndex(1, depth + 1, name="k"))
    st.line_chart(curves, x_label="k", y_label="recall@k")
    last = runs[-1]
    if last["by_kind"]:
        st.dataframe([{"queries": kind, **scores} for kind, scores in last["by_kind"].items()], hide_index=True)
