"""Test and bench helpers that are not part of the product (never packaged or shipped)."""
