"""Training: the batch pipeline (:mod:`~bpflow.train.batcher`), resolved configs
(:mod:`~bpflow.train.settings`), the run-time environment (:mod:`~bpflow.train.runtime`), the
training loop (:mod:`~bpflow.train.loop`), the bias-factorization recipes
(:mod:`~bpflow.train.recipes`) and the three steps (:mod:`~bpflow.train.steps`).  Training
imports no evaluation code."""
