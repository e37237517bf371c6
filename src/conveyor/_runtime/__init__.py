"""What runs inside a step: the executor protocol, value codecs, hashing, atomic files.

Standard library only. The whole package is copied into every step (with conveyor's
`__init__.py`, `errors.py` and `version.py`), so a step environment never installs conveyor.
"""
