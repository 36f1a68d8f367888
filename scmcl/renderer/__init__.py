"""NED's per-actor neural face renderer (method.md §5)."""
