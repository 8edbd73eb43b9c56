"""``python -m farmtui.cli``: the same as the ``farm`` command."""

from farmtui.cli import main

raise SystemExit(main())
