"""Runnable privacy and attack studies: ``python -m experiments.attacks.<study>``."""
