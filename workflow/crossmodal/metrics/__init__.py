"""Evaluation metrics shared by the four papers, each checked against a reference implementation.

* :mod:`crossmodal.metrics.image` - FID / KID / IS from streamed features, pluggable extractors
  (``inception-fid``, ``cohort-ssl``);
* :mod:`crossmodal.metrics.survival` - Harrell's C-index, discrete-time NLL survival loss;
* :mod:`crossmodal.metrics.tabular` - R², output variance, energy distance, k-NN precision /
  recall / F1 coverage;
* :mod:`crossmodal.metrics.steps` - the pipeline steps (SimCLR encoder, real-vs-real FID table).

Conformal prediction lives in :mod:`crossmodal.conformal`, statistical tests in
:mod:`crossmodal.stats`, cell-type counting in :mod:`crossmodal.cells`.
"""
