# rules for toy (filled in by its issue)
