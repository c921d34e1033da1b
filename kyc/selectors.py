"""kyc: selectors (filled in by its issue)."""
