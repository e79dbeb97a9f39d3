"""Benchmarks: a simulated SGLang-like server and `kb bench`, which drives kb's real pipeline against it."""
