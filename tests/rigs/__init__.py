"""Test rigs that need more than kb's own environment (a real vLLM in a virtualenv of its own)."""
