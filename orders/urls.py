"""orders: urls (filled in by its issue)."""
