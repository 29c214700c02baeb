"""Tuning on your own data (``grounded tune``): embeddings and a reranker.

- :mod:`.data`: (question, relevant passage) pairs from a BEIR split or JSONL; the dev hold-out.
- :mod:`.mining`: hard negatives from grounded's own hybrid retrieval, positives excluded.
- :mod:`.selection`: dev nDCG@10 per epoch, early stopping, the keep-only-if-better rule.
- :mod:`.embeddings` / :mod:`.reranker`: the two trainers.

Example::

    grounded tune embeddings --dataset ../shared/datasets/scifact --out tuned/emb
"""
