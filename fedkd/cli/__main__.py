"""``python -m fedkd.cli``: the ``fedkd`` command."""

from fedkd.cli.commands import entry

if __name__ == "__main__":  # not when a tool (autodoc) imports the module
    entry()
