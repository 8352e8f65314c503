"""On-disk formats and the shared concepts they carry, one owner each.

* :mod:`~bpflow.formats.sequence` - DNA: one-hot encoding, integer base codes, reverse
  complement, reverse-complement task orders.
* :mod:`~bpflow.formats.blocks` - merged-block reading of many windows of one chromosome.
* :mod:`~bpflow.formats.fasta` - genome FASTA (random access through the ``.fai`` index).
* :mod:`~bpflow.formats.bigwig` - bigWig coverage: reading windows, writing tracks.
* :mod:`~bpflow.formats.bed` - BED / narrowPeak regions.
* :mod:`~bpflow.formats.coords` - per-sample coordinates shared by datasets and prediction files.
* :mod:`~bpflow.formats.dataset` - the training dataset HDF5 (BPReveal's layout + coordinates).
* :mod:`~bpflow.formats.predictions` - prediction HDF5 files (BPReveal's layout).
* :mod:`~bpflow.formats.contributions` - contribution-score HDF5 files, their TF-MoDISco-lite
  export and bigWigs of projected contributions.
* :mod:`~bpflow.formats.model_file` - saved ``.keras`` models (loaded with one-line errors).
* :mod:`~bpflow.formats.motifs` - motifs (PWMs) and their JASPAR / MEME readers.
* :mod:`~bpflow.formats.codec` - the direct deflate encoder of one-hot HDF5 chunks.

Nothing here imports Keras at import time (``model_file.load_model`` does when called).
"""
