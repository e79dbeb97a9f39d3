"""kb's reading side: search over a knowledge base, and the shells (CLI, Streamlit UI) around it."""
