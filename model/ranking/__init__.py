"""The ranker: reorders the retriever's candidates for one user and session.

- ``neumf``: the Keras NeuMF (GMF + MLP, He et al. 2017) with session, retrieval-score and
  context inputs.
- ``inputs``: the candidate lists and the features read for each, built one way for
  training, evaluation and serving.
- ``scorer``: the same forward pass in NumPy over exported weights, for the workers.
- ``training``: the paper's NeuMF (``fit_neumf``) and the ranker over retriever candidates
  (``fit_ranker``).
"""
