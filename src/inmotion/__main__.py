"""`python -m inmotion` is the `inmotion` command."""

from inmotion.cli.main import main

main()
