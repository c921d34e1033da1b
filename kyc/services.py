"""kyc: services (filled in by its issue)."""
