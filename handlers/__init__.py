"""Thin AWS entry points: each reads its settings, gets its service from core.bootstrap, runs it."""
