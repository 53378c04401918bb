"""Measuring models alike.

- ``metrics``: HR@K, NDCG@K, MRR, AUC, coverage over ranks of the held-out item.
- ``protocols``: sampled and full ranking, next-click, prequential; the ``Scorer`` protocol.
- ``baselines``: popularity, item-kNN, ALS.
- ``harness``: trains the models named by kind and reports them (``streamrec train|evaluate``).
- ``cold``: the cold-item protocol (items held out of training, ranked by content).
- ``gate``: the trainer's champion/challenger decision on the newest time slice.
"""
