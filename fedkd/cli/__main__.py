"""``python -m fedkd.cli``: the ``fedkd`` command."""

from fedkd.cli.commands import main

if __name__ == "__main__":  # not when a tool (autodoc) imports the module
    raise SystemExit(main())
