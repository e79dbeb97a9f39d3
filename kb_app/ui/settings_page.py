"""The Settings page: choose or create a collection, see its layout, the endpoints' health and every setting."""

from __future__ import annotations

import streamlit as st

from ingest.client import make_client
from ingest.errors import KbError
from ingest.http import auth_headers, raise_for_transient, retry_policy, v1_url
from ingest.knowledge_base import KnowledgeBase
from ingest.manage import list_knowledge_bases
from ingest.settings import Settings


def endpoint_health(url: str, api_key: str | None) -> str:
    """The endpoint's state in one line: up (and what it serves), an HTTP status, or unreachable."""
    import httpx
    from tenacity import Retrying

    def list_models() -> httpx.Response:
        response = httpx.get(f"{v1_url(url)}/models", timeout=3, headers=auth_headers(api_key))
        raise_for_transient(response)
        return response

    try:  # a page waits for this: one quick retry of a passing fault, none when nothing answers
        response = Retrying(**retry_policy(1, 0.2, 1.0, retry_unreachable=False))(list_models)
    except httpx.HTTPStatusError as exc:
        return f"⚠️ HTTP {exc.response.status_code}"
    except httpx.HTTPError as exc:
        return f"❌ unreachable ({type(exc).__name__})"
    if response.status_code == 200:
        models = [m.get("id") for m in response.json().get("data", [])]
        return f"✅ up, serving {', '.join(map(str, models)) or 'no models listed'}"
    return f"⚠️ HTTP {response.status_code}"


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
            KnowledgeBase(client, name, settings=current)  # validates the name
        except KbError as exc:
            st.error(str(exc))
        else:
            st.session_state["collection"] = name
            st.rerun()

    kb = KnowledgeBase(client, current.collection, settings=current)
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
