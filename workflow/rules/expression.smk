# rules for expression (filled in by its issue)
