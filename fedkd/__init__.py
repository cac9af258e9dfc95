"""fedkd: federated knowledge distillation with secure aggregation.

The Python entry point is :func:`fedkd.run_federation` (every method, in process or on the
Ray engine; it returns the run's recorder, whose ``rows`` are the per-round history)::

    import fedkd

    history = fedkd.run_federation({"num-rounds": 3}, 10, engine="inprocess")
    print([row.student_accuracy for row in history.rows])

``import fedkd`` itself stays light (no PyTorch or Ray): the names below load on first use.
"""

from typing import Any

__all__ = ["RayResources", "run_federation"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedkd import engines

        return getattr(engines, name)
    raise AttributeError(f"module 'fedkd' has no attribute {name!r}")
