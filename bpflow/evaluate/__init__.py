"""Evaluation: running models (:mod:`~bpflow.evaluate.inference`), predictions
(:mod:`~bpflow.evaluate.predict`, :mod:`~bpflow.evaluate.bigwig`), metric math
(:mod:`~bpflow.evaluate.measures`) and the metrics step (:mod:`~bpflow.evaluate.metrics`),
marginal footprints (:mod:`~bpflow.evaluate.footprints`) and the quality checks of a combined
model (:mod:`~bpflow.evaluate.qc`)."""
