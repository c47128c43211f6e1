"""``python -m rmm2sigma``: the same command line as the ``rmm2sigma`` script."""

from .cli import main

main()
