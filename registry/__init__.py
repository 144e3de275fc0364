"""MLflow registration, lookup, promotion and serving-host pull (see the registry issue)."""
