"""Framework-free building blocks of the federated loop.

The Flower adapters that drive them live in ``clients/`` and ``server/``.
"""
