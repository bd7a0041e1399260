"""Thin AWS entry points: each builds settings and clients, then calls into core."""
