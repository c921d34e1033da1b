"""orders: tasks (filled in by its issue)."""
