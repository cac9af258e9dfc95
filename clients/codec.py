"""Envelopes to Flower records and back: the one translation both adapters use.

An :class:`~fedkd.transport.Envelope` becomes a ``RecordDict`` laid out the way Flower's own
strategies expect (Flower's FedAvg aggregates our replies: tests/test_fedavg.py):

- weights (arrays named ``weights/<tensor>``) -> ``ArrayRecord "arrays"`` (tensor names);
- any other array ``name`` -> ``ArrayRecord name`` holding that one array;
- ``int``/``float`` fields -> ``MetricRecord "metrics"``; ``str``/``bytes``/``bool`` fields
  -> ``ConfigRecord "config"``.

Decoding is the inverse and refuses records it does not know (``ValueError`` naming them).
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedkd.fl import keys
from fedkd.transport import Envelope

WEIGHTS = "arrays"  # Flower's strategies keep model weights under this record name
CONFIG = "config"
METRICS = "metrics"


def encode(envelope: Envelope) -> RecordDict:
    """The RecordDict that carries ``envelope`` (its kind travels as the message type)."""
    content = RecordDict()
    weights = {
        name.removeprefix(keys.WEIGHTS_PREFIX): Array(value)
        for name, value in envelope.arrays.items()
        if name.startswith(keys.WEIGHTS_PREFIX)
    }
    if weights:
        content[WEIGHTS] = ArrayRecord(array_dict=weights)
    for name, value in envelope.arrays.items():
        if not name.startswith(keys.WEIGHTS_PREFIX):
            content[name] = ArrayRecord([value])
    numbers = {
        k: v
        for k, v in envelope.fields.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    others = {k: v for k, v in envelope.fields.items() if k not in numbers}
    if numbers:
        content[METRICS] = MetricRecord(numbers)  # type: ignore[arg-type]
    if others:
        content[CONFIG] = ConfigRecord(others)  # type: ignore[arg-type]
    return content


def decode(kind: str, content: RecordDict) -> Envelope:
    """The envelope a RecordDict carries; ``ValueError`` on records of an unexpected type."""
    envelope = Envelope(kind)
    for name, record in content.items():
        if isinstance(record, ConfigRecord | MetricRecord):
            envelope.fields.update(dict(record))  # type: ignore[arg-type]
        elif isinstance(record, ArrayRecord) and name == WEIGHTS:
            for tensor, array in record.items():
                envelope.arrays[keys.WEIGHTS_PREFIX + tensor] = array.numpy()
        elif isinstance(record, ArrayRecord):
            arrays = record.to_numpy_ndarrays()
            if len(arrays) != 1:
                raise ValueError(f"record '{name}' must hold one array, holds {len(arrays)}")
            envelope.arrays[name] = arrays[0]
        else:
            raise ValueError(f"record '{name}' has unexpected type {type(record).__name__}")
    return envelope


def message_type(kind: str) -> str:
    """Flower message type of an envelope kind: ``train``, or ``query.<stage>``."""
    return kind if kind == keys.TRAIN else f"query.{kind}"


def kind_of(message_type: str) -> str:
    """The inverse of :func:`message_type`."""
    return message_type.removeprefix("query.")
