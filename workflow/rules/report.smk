# rules for report (filled in by its issue)
