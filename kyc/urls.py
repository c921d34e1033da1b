"""kyc: urls (filled in by its issue)."""
