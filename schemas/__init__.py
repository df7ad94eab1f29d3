"""The JSON Schemas, shipped inside the installed package as `reconciler.schemas` (data only)."""
