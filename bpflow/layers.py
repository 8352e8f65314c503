"""Custom Keras layers (being written)."""
