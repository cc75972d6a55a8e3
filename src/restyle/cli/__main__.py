"""`python -m restyle.cli` runs the command line, as `python -m restyle` does."""

from restyle.cli import main

main()
