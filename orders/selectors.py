"""orders: selectors (filled in by its issue)."""
