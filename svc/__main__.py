"""``python -m svc`` is the ``svc`` command."""

from svc.cli import main

raise SystemExit(main())
