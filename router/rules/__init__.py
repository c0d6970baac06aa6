"""The rule language: loading, matching and live reloading of ``rules/*.yaml``."""
