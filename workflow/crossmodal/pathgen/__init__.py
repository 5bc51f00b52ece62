"""PathGen reproduction (Dey et al., *Generating crossmodal gene expression from cancer
histopathology improves multimodal AI predictions*): slide -> expression -> grade / survival.

Modules: ``targets`` (input functions of workflow/rules/pathgen.smk), ``patches`` (rule
embed_patches), ``cases`` (splits, clinical labels, gene groups, the expression hand-over
format), ``synthesis`` (PathGen training and sampling), ``evaluate`` (Table 2), ``predict``
(MCAT_GR runs, AUC / C-index), ``uncertainty`` (conformal sets, fairness tables), ``heatmaps``
(distributed predictions, co-attention maps), ``round_trip`` (expression -> RNA-CDM tiles ->
expression, beyond the paper), ``reproduction`` (the claims table).
``crossmodal.pathgen.steps`` holds the steps.

Hand-over formats (each read back through one validating reader):

* **patch embeddings** ``results/pathgen/embeddings/<sample>.npz`` (:mod:`.patches`):
  ``features`` float32 (n, d); ``coords`` int64 (n, 2) level-0 x, y of each patch's top-left
  corner; scalars ``level`` (pyramid level the tiler read), ``magnification`` (1 = finest of
  the configured presets), ``size0`` (patch edge in level-0 px), ``patch_size``, ``mpp``
  (µm/px of the patches), ``n_candidates`` and ``n_dropped_bright``; strings ``sample``,
  ``preset`` (tiling preset), ``encoder`` (label of the patch encoder, e.g.
  ``cohort-ssl ... (stand-in for UNI)``), ``format`` (``crossmodal-pathgen-embeddings``).  A
  slide with no tissue patch has n = 0 (the case is then excluded and listed in
  ``results/pathgen/prepare_qc.json``).
* **expression per case** ``results/pathgen/expression/{real,synthesized,round_trip}.tsv.gz``
  (:func:`.cases.write_expression` / :func:`.cases.read_expression`): TSV, one row per case
  (= diagnostic slide: a patient with several slides has several rows; Table 2 averages them per
  patient, MCAT_GR pools the patient's slide bags and averages its rows, as MCAT's loader),
  columns ``sample`` (index), ``patient``, ``split``, ``source`` (``real`` | ``pathgen`` | ``round_trip``;
  ``pathgen out of fold i/k`` for a training case under ``pathgen.cross_fit``),
  ``n_draws`` (DDPM samples averaged; 0 for real), then one column per row of
  ``results/pathgen/genes.tsv`` (columns ``gene``, ``group``, ``feature``; in that order, groups
  contiguous), named by ``feature``: the gene symbol, or ``<gene>|<group>`` for a gene in several
  MCAT groups (MCAT keeps such a gene in each group's vector; its real value repeats, each group's
  decoder synthesizes its own), holding z-scores with the PathGen training split's mean and sd.
  MCAT_GR reads either file the same way.
"""

