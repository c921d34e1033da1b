"""kyc: errors (filled in by its issue)."""
