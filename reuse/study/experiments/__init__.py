"""Experiments E1-E5, each a function from a config to a tidy pandas DataFrame."""
