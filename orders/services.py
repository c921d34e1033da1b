"""orders: services (filled in by its issue)."""
