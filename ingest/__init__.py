"""kb's ingestion library: everything that reads documents and writes the knowledge base.

Data flows one way: files (`discover`) -> documents (`formats`, by suffix) -> chunks (`chunking`, counted by
`tokens`) -> vectors (`embeddings`) -> Chroma (`records`, `client`, `knowledge_base`, `store_process`) and
the BM25 index (`lexical`), orchestrated by `pipeline`. docs/architecture.md has the diagram.
"""
