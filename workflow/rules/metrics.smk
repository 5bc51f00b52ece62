# rules for metrics (filled in by its issue)
