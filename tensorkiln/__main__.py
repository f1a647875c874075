"""``python -m tensorkiln`` is the same program as the ``tensorkiln`` command."""

from tensorkiln.cli import main

raise SystemExit(main())
