"""`python -m topoc`: the same as the `topoc` command."""

from topoc.entry import main

main()
