"""Search over a job's embeddings: the vector store they are published to (`store.py`) and the query that finds
a new text's nearest rows in it (`python -m pipelines.search`, `__main__.py`)."""
