# rules for download (filled in by its issue)
