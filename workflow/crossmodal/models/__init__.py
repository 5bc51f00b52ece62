"""Models shared across the four papers (one implementation per idea)."""
