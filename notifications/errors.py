"""notifications: errors (filled in by its issue)."""
