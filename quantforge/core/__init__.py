"""The ground floor: what the rest of quantforge builds on. It imports nothing of the project above it."""
