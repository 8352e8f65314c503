"""Data preparation: region sets (:mod:`~bpflow.prepare.regions`, background sampling in
:mod:`~bpflow.prepare.background`), training datasets (:mod:`~bpflow.prepare.datasets`) and
their inspection (:mod:`~bpflow.prepare.inspect`).  Nothing here imports Keras."""
