# rules for pathgen (filled in by its issue)
