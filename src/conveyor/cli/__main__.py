"""`python -m conveyor.cli`."""

from conveyor.cli import main

main()
