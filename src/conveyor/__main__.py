"""`python -m conveyor`: the command line, as the `conveyor` script runs it."""

from conveyor.cli import main

main()
