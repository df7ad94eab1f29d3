"""The functional core: pure, synchronous, deterministic; no I/O imports."""
