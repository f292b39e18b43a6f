"""``python -m cardpipe``: the same CLI as the ``cardpipe`` console script."""

from cardpipe.cli import main

main()
