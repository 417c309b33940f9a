"""Board provisioning, the fleet CA, and signed model updates (see provisioning/README.md)."""
