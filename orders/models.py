"""orders: models (filled in by its issue)."""
