"""grounded ingest: load files, chunk, embed, BM25, upsert into Qdrant."""
