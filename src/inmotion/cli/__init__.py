"""The `inmotion` command."""
