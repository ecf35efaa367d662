"""Vision models built on ssops' ops (ssops.models)."""
