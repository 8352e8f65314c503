"""Losses (being written)."""
