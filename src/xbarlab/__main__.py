"""``python -m xbarlab``: the xbarlab command line."""

from xbarlab.cli import main

main()
