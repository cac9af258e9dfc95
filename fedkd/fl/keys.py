"""Wire vocabulary shared by ``clients/`` and ``server/``: message types and record names.

One place for every string both sides must agree on; neither side spells them out itself.
"""

# Message types. ``train`` starts a round on a client; the secure-aggregation stages that follow
# are ``query`` actions, one Flower message exchange each.
TRAIN = "train"
SHARE_KEYS = "share_keys"
MASKED_INPUT = "masked_input"
UNMASK = "unmask"
QUERY_SHARE_KEYS = f"query.{SHARE_KEYS}"
QUERY_MASKED_INPUT = f"query.{MASKED_INPUT}"
QUERY_UNMASK = f"query.{UNMASK}"

# Record names inside a message's RecordDict.
ARRAYS = "arrays"  # model weights (student down, FedAvg weights up); Flower FedAvg's default key
CONFIG = "config"  # per-round settings from the server
TEACHER = "teacher"  # FedMD: the ensemble teacher's logits on the public set, pushed down
CONTRIBUTION = "contribution"  # plaintext path: a client's teacher contribution, up
MASKED = "masked"  # secure path: a client's masked, quantised contribution, up
SECAGG = "secagg"  # secure path: protocol payloads (keys, encrypted shares, revealed shares)
METRICS = "metrics"  # client metrics, up; Flower FedAvg's default key

# Keys inside the CONFIG record.
ROUND = "round"
PHASE = "phase"  # which method the round belongs to: fedkd, fedavg, local
SECAGG_CONFIG = "secagg-config"  # encoded fedkd.secagg config for this round
PAYLOAD = "payload"  # encoded stage message
VALUES = "values"  # array name inside CONTRIBUTION / MASKED records

# Keys inside the METRICS record.
NUM_EXAMPLES = "num-examples"  # Flower FedAvg weights by this key
CLIENT_ACCURACY = "client-accuracy"
TRAIN_LOSS = "train-loss"
TRAIN_SECONDS = "train-seconds"
PARTITION_ID = "partition-id"
CLIPPED = "clipped-fraction"  # share of public-set logits cut at the secagg clip range

# Node-config keys (set by the simulation engine or ``flower-supernode --node-config``).
NODE_PARTITION_ID = "partition-id"
CLIPPED = "clipped-fraction"  # share of public-set logits cut at the secagg clip range
NODE_NUM_PARTITIONS = "num-partitions"
NODE_REQUIRE_SECAGG = "require-secagg"  # a node refuses plaintext contributions when true

# Keys in context.state (per-node state that outlives one message).
STATE_MODEL = "local-model"
STATE_SECAGG = "secagg-state"
STATE_PENDING = "pending"
