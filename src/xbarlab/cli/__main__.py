"""``python -m xbarlab.cli``."""

from xbarlab.cli import main

main()
