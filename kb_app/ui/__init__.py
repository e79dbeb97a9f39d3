"""The pages of kb's browser UI. `kb_app/app.py` is the script Streamlit runs: it signs in and picks a page."""
