"""Presets (name -> Config) and recipes (multi-run figures)."""
