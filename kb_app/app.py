"""kb in the browser: search across languages, upload documents, manage the library.

Start it with `kb ui` (or `streamlit run kb_app/app.py`). Settings come from the same typed object as the
CLI (`KB_*` variables, `kb.toml`); every operation is a library call the CLI also uses. Document text is
always shown as text: it is HTML-escaped before any markup kb adds (highlights), so nothing inside a
document renders or runs.
"""

from __future__ import annotations

import sys

import streamlit as st

from ingest.errors import KbError
from kb_app.ui.ask_page import ask_page
from kb_app.ui.common import settings
from kb_app.ui.library_page import library_page
from kb_app.ui.quality_page import quality_page
from kb_app.ui.search_page import search_page
from kb_app.ui.settings_page import settings_page
from kb_app.ui.sign_in import signed_in
from kb_app.ui.upload_page import upload_page

PAGES = {"Search": search_page, "Ask": ask_page, "Upload": upload_page, "Library": library_page,
         "Quality": quality_page, "Settings": settings_page}


def main() -> None:
    """One run of the page: settings, sign-in, the sidebar's page switcher, then the chosen page."""
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
        page = st.radio("Page", list(PAGES), key="page", label_visibility="collapsed")
    try:
        st.sidebar.caption(f"Collection: **{current.collection}**")
        PAGES[page](current)
    except KbError as exc:
        st.error(str(exc))
    except Exception as exc:  # a message, never a traceback in the page
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")


main()
