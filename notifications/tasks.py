"""notifications: tasks (filled in by its issue)."""
