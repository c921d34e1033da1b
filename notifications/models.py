"""notifications: models (filled in by its issue)."""
