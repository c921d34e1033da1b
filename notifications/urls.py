"""notifications: urls (filled in by its issue)."""
