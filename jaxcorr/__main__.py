"""``python -m jaxcorr``: the command line of :mod:`jaxcorr.cli`."""

from jaxcorr.cli import main

raise SystemExit(main())
