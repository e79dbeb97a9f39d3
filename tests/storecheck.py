"""What a store holds, as JSON on stdout: run in its own process so every look opens the store afresh.

python -m tests.storecheck CHROMA_PATH COLLECTION
"""

from __future__ import annotations

import json
import sys
from collections import Counter


def look(chroma_path: str, collection: str) -> dict:
    from ingest.knowledge_base import KnowledgeBase
    from ingest.settings import load_settings

    kb = KnowledgeBase.open(load_settings(chroma_path=chroma_path, collection=collection))
    records = {source: [r.sha256, r.chunks] for source, r in kb.documents().items()}
    chunks, vectors = kb.all_chunks(with_vectors=True)
    ids = [c.id for c in chunks]
    # The vector index must agree with the records: each chunk found by its own vector (every 7th, for time),
    # among its own version's chunks (an edited file's old and new versions share texts, hence vectors).
    def found(chunk, vector) -> bool:
        version = {"$and": [{"source": chunk.metadata["source"]}, {"sha256": chunk.metadata["sha256"]}]}
        return [hit.id for hit in kb.query(vector, k=1, where=version)] == [chunk.id]

    unfound = [c.id for c, v in list(zip(chunks, vectors if vectors is not None else []))[::7] if not found(c, v)]
    per_version = Counter(f"{c.metadata['source']}|{c.metadata['sha256']}" for c in chunks)
    positions = Counter((c.metadata["source"], c.metadata["sha256"], c.metadata.get("page"), c.metadata["chunk"])
                        for c in chunks)
    return {
        "records": records,
        "chunks": dict(per_version),
        "ids": sorted(ids),
        "repeated_positions": sum(n - 1 for n in positions.values() if n > 1),
        "texts": {c.id: c.text for c in chunks},
        "unfound_by_vector": unfound,
    }


if __name__ == "__main__":
    json.dump(look(sys.argv[1], sys.argv[2]), sys.stdout)
