"""Studies, benchmarks and deployments over the fedkd library; they run from a checkout."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (experiments/ is not installed: it lives only here)."""
