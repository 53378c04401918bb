"""Pure ML with no Kafka, Redis or MLflow: nothing here talks to a network or a store
(``make lint`` checks it). Grouped by stage, the way the data flows:

- ``data``, ``sampling``: sequences, id maps, splits, negative sampling.
- ``features``, ``content``: what an event's context and an item's catalogue record
  become as model inputs, declared once for training and serving.
- ``retrieval/``: the retriever: the SASRec layer, its NumPy incremental encoder, its
  training, the FAISS item index. Change how sessions are embedded or candidates found here.
- ``ranking/``: the ranker: NeuMF, its NumPy scorer, its training. Change how candidates
  are scored here.
- ``pipeline``: retrieve then rerank, in both forms side by side: the Keras scorer for
  evaluation and the NumPy bundle the workers serve.
- ``evaluation/``: metrics, the offline protocols, baselines, the harness behind
  ``streamrec train|evaluate``, the champion/challenger gate.
- ``experiments/``: live experiments as pure math: bucketing, interleaving, online
  tallies, always-valid statistics.
- ``fitting``, ``weights``: the shared training loop; weights exported, copied, checked.

Imports nothing from ``streams`` or ``services``.
"""
