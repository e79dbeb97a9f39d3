"""The Upload page: files from the browser saved under the upload folder and ingested, with progress bars."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ingest.formats import SUFFIXES
from ingest.ocr import OCR_MODES
from ingest.report import FileOutcome, Progress
from ingest.settings import Settings
from kb_app import uploads
from kb_app.ui.common import describe, display_name, forget_searchers, ingest_here


class StreamlitProgress(Progress):
    """The pipeline's progress as bars: one for the run, one for each file."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.overall = st.progress(0.0, text="Starting…")
        self.bars = {source: st.progress(0.0, text=f"{name}: waiting") for source, name in names.items()}
        self.files = self.total_files = self.chunks = self.planned_chunks = 0

    def _overall(self) -> None:
        fraction = self.files / self.total_files if self.total_files else 1.0
        text = f"{self.files}/{self.total_files} files · {self.chunks}/{self.planned_chunks} passages"
        self.overall.progress(min(1.0, fraction), text=text)

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


def upload_page(current: Settings) -> None:
    st.header("Upload")
    st.write(
        "Drop documents: PDF, Word, PowerPoint, Excel, OpenDocument, EPUB, RTF, CSV, e-mail, HTML, Markdown, "
        f"text, and scans or photos of pages (up to {current.max_upload_files} files at once, "
        f"{current.max_upload_mb} MB each). They are kept in `{current.upload_dir}` and added to "
        f"**{current.collection}**."
    )
    ocr = st.radio("Read by OCR", OCR_MODES, index=OCR_MODES.index(current.ocr), horizontal=True, key="ocr",
                   help="auto: scanned PDF pages and images; always: every page (when a PDF's text layer is "
                        "garbage); never: none, so scans fail (KB_OCR sets the default).")
    round_ = st.session_state.setdefault("upload_round", 0)
    files = st.file_uploader(
        "Documents", type=sorted(suffix.lstrip(".") for suffix in SUFFIXES),
        accept_multiple_files=True, key=f"uploader-{round_}",
    )
    if files and st.button(f"Ingest {len(files)} file{'s' if len(files) > 1 else ''}", type="primary", key="ingest"):
        ingest_uploads(current.model_copy(update={"ocr": ocr}), files)
        st.session_state["upload_round"] = round_ + 1  # a fresh, empty uploader for the next batch
    report = st.session_state.get("upload_report")
    if report:
        st.subheader("Last upload")
        st.dataframe(report, hide_index=True, width="stretch")


def ingest_uploads(current: Settings, files: list[Any]) -> None:
    rows: list[dict[str, Any]] = []
    if len(files) > current.max_upload_files:
        st.error(f"{len(files)} files is more than the {current.max_upload_files} accepted at once "
                 "(KB_MAX_UPLOAD_FILES).")
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
        forget_searchers()
    st.session_state["upload_report"] = rows
    failed = [r for r in rows if r["outcome"] in ("failed", "refused")]
    if failed:
        st.error(f"{len(failed)} of {len(rows)} files were not added: see the table below.")
    else:
        st.success(f"Done: {len(rows)} files.")
