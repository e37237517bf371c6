"""Reusable steps. Imports nothing: each step module pulls in only what its environment has."""
