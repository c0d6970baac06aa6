"""Plugin hooks: the hook specifications and the per-router plugin manager."""
