"""The password form shown before anything else when KB_UI_PASSWORD is set."""

from __future__ import annotations

import hmac
import threading
import time

import streamlit as st

from ingest.settings import Settings

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
