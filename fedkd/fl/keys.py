"""Wire vocabulary of the federated round, shared by the library and both Flower adapters.

One place for every string both sides must agree on; neither side spells them out itself.
The secure-aggregation stages' kinds and fields live in :mod:`fedkd.secagg.protocol`.
"""

# Envelope kinds. ``train`` starts a round on a client; the secure-aggregation stages that
# follow are kinds of their own (Flower carries them as ``query.<kind>`` messages).
TRAIN = "train"

# Array names in an envelope.
WEIGHTS_PREFIX = "weights/"  # model weights (student down, FedAvg weights up), one per tensor
TEACHER = "teacher"  # FedMD: the ensemble teacher's logits on the public set, pushed down
CONTRIBUTION = "contribution"  # plaintext path: a client's teacher contribution, up

# Field names in an envelope.
ROUND = "round"  # the train round
PHASE = "phase"  # which method the round belongs to: fedkd, fedavg, fedprox, local
PROXIMAL_MU = "proximal-mu"  # FedProx: the proximal weight (Flower's FedProx strategy sends it)
DEADLINE = "deadline"  # wall-clock time (epoch seconds) after which the server no longer waits
SECAGG_CONFIG = (
    "secagg-config"  # encoded fedkd.secagg config for this round (stage 1 rides on train)
)

# Client metrics in a train reply.
NUM_EXAMPLES = "num-examples"  # Flower FedAvg weights by this key
CLIENT_ACCURACY = "client-accuracy"
TRAIN_LOSS = "train-loss"
PARTITION_ID = "partition-id"
CLIPPED = "clipped-fraction"  # share of public-set logits cut at the secagg clip range

# Node-config keys (set by the simulation engine or ``flower-supernode --node-config``).
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_REQUIRE_SECAGG = "require-secagg"  # a node refuses anything in the clear when true
NODE_PUBLIC_DIGEST = "public-set-digest"  # hex SHA-256 of the public set the operator accepts
NODE_SECAGG_IDENTITY = "secagg-identity"  # path of this node's identity file (fedkd keys)
NODE_SECAGG_ROSTER = "secagg-roster"  # path of the operator's copy of the roster
NODE_STATE_DIR = "state-dir"  # the node's own state (release ledger); default $FEDKD_HOME/nodes
NODE_ALLOW_CURIOUS = "allow-curious"  # a deployed node may run without a roster when true
NODE_FIXED_PARTICIPANTS = "fixed-participants"  # one participant set per federation when true

# Keys of the per-node store (state that outlives one message).
STATE_MODEL = "local-model"
STATE_SECAGG = "secagg-state"
STATE_PENDING = "pending"
STATE_DPSGD = "dpsgd-accountant"  # the node's Opacus accountant history (client-dp-sgd)
STATE_RELEASE = "release"  # the pending release's ledger entry and its participants' names
