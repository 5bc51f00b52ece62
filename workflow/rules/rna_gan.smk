# rules for rna_gan (filled in by its issue)
