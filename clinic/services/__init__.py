"""The domain: plain functions that never touch ``request`` or ``session``."""
