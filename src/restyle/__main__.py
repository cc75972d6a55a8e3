"""`python -m restyle` runs the command line."""

from restyle.cli import main

main()
