"""orders: errors (filled in by its issue)."""
