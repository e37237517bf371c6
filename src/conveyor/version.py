"""Version numbers that other parts of conveyor key on."""

__version__ = "0.1.0"

# Bumped whenever the task-spec or result-file format changes; part of every environment key,
# so environments built for an older executor are never reused by a newer one.
EXECUTOR_PROTOCOL = 1
