# rules for coherent (filled in by its issue)
