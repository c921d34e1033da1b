"""jobs: admin (filled in by its issue)."""
