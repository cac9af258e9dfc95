"""``python -m fedkd.cli``: the ``fedkd`` command."""

from fedkd.cli.commands import main

raise SystemExit(main())
