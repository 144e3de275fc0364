"""quantforge's test support: never imported by the product (see testing/pyproject.toml)."""
