"""The retriever: turns a session into an embedding and finds the items nearest to it.

- ``sasrec``: the Keras SASRec layer (Kang & McAuley 2018), what training fits.
- ``encoder``: the same forward pass in NumPy over exported weights, incremental per user
  (a key/value cache steps one item at a time), for the workers.
- ``training``: fitting SASRec on sequences, and ``SASRecScorer`` for the protocols.
- ``index``: the FAISS item index (flat, IVF or HNSW; GPU when present).
"""
