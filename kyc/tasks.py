"""kyc: tasks (filled in by its issue)."""
