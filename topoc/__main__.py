"""`python -m topoc`: the same as the `topoc` command."""

from topoc.cli import main

main()
