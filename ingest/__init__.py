"""kb's ingestion library: everything that writes the knowledge base.

Data flows one way: files -> documents (`loaders`) -> chunks (`chunking`, counted by `tokens`) ->
vectors (`embeddings`) -> Chroma (`store`), orchestrated by `pipeline`.
"""
