"""Property-based hostile input against the real service."""
