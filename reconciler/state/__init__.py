"""State stores: where the reconciler remembers what it started (SQLite file or PostgreSQL)."""
