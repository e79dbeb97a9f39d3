"""Benchmarks of kb itself, run from a checkout as `python -m bench.<tool>`: a simulated SGLang-like server
(bench.simserver) and the runner that drives kb's real pipeline against it (bench.run), the peer comparison,
endpoint counts, PDF pages/s, scale, corpora and evaluation sets. kb's own packages never import them."""
