"""notifications: selectors (filled in by its issue)."""
