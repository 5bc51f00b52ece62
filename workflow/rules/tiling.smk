# rules for tiling (filled in by its issue)
