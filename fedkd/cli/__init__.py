"""The ``fedkd`` command and its launcher (``fedkd run``, ``fedkd keys``, ``fedkd status``).

It starts Flower's own commands (``flwr run``, ``flwr ls``, ``flwr stop``) as processes and
never imports ``flwr``, like the rest of the library. ``python -m fedkd.cli`` is the command.

- :mod:`fedkd.cli.commands`: the command line (``fedkd run`` and the dispatch to the others)
- :mod:`fedkd.cli.run_config`: run-config defaults, ``--set`` parsing, the early check
- :mod:`fedkd.cli.launch`: ``flwr run`` on a private local SuperLink, and on a deployed one
- :mod:`fedkd.cli.ray_launch`: the run in this process on fedkd's Ray engine
- :mod:`fedkd.cli.flower_status`, :mod:`fedkd.cli.processes`: a run's outcome, its processes
- :mod:`fedkd.cli.keygen`, :mod:`fedkd.cli.status`: ``fedkd keys`` and ``fedkd status``
"""

from fedkd.cli.commands import main

__all__ = ["main"]
