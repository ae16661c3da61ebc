"""Pieces every stage shares: user-facing errors, atomic writes, image reading, provenance."""
