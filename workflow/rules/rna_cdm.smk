# rules for rna_cdm (filled in by its issue)
