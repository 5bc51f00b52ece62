"""Expression: readers, kallisto quantification, gene harmonisation, training-split z-scores.

Public interface:

- readers: :func:`read_star_counts`, :func:`read_gct`, :func:`read_geo_series_matrix`,
  :func:`read_kallisto_abundance` (all raise :class:`ExpressionInputError` naming the file);
- :func:`harmonise` (common genes, protein-coding list), :func:`load_gene_list`;
- :func:`log_transform`, :func:`fit_scaler`, :func:`apply_scaler` (training-split statistics,
  missing genes of external cohorts set to 0 after z-scoring);
- ``crossmodal.expression.kallisto`` (the real kallisto, version pinned);
- ``crossmodal.splits`` (patient-level splits).
"""
from crossmodal.expression.harmonise import harmonise, load_gene_list, read_sample_counts  # noqa: F401
from crossmodal.expression.normalise import apply_scaler, fit_scaler, log_transform  # noqa: F401
from crossmodal.expression.readers import (  # noqa: F401
    ExpressionInputError,
    collapse_duplicates,
    read_gct,
    read_geo_series_matrix,
    read_kallisto_abundance,
    read_star_counts,
    read_t2g,
    strip_version,
)
