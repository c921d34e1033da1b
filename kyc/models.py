"""kyc: models (filled in by its issue)."""
