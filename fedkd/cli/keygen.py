"""``fedkd keys``: create one Ed25519 identity per node and the roster, into a folder.

    fedkd keys --nodes 10 --out deploy/keys
    fedkd keys --names hospital-a hospital-b hospital-c --out keys/

Writes ``<out>/roster.json`` (public: copy it to every node and to the server) and
``<out>/<name>.identity.json`` per node (private, mode 0600: copy each to its node only).
The names default to ``0 .. N-1``, the partition ids, which is what a SuperNode started with
``partition-id=i`` uses. The roster must reach the nodes out of band -- not through the server:
a server that hands out the roster can put its own keys in it. Existing files are never
overwritten unless ``--force`` is given.

Exit status: 0 written; 2 bad arguments or files in the way (nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedkd.secagg.errors import ConfigError
from fedkd.secagg.identity import Identity, Roster, write_identity, write_roster

EXIT_USAGE = 2
ROSTER_FILE = "roster.json"


def identity_file(out: Path, name: str) -> Path:
    """Where the identity of ``name`` goes inside ``out``."""
    return out / f"{name}.identity.json"


def create_keys(names: Sequence[str], out: Path, *, force: bool = False) -> Roster:
    """Create an identity per name and the roster in ``out``.

    Parameters
    ----------
    names : Sequence[str]
        Distinct node names (roster identities).
    out : Path
        Folder to write into (created when missing).
    force : bool
        Overwrite existing files.

    Returns
    -------
    Roster
        The roster written to ``out / "roster.json"``.

    Raises
    ------
    ConfigError
        For repeated or invalid names, names that are not plain file names, or existing
        files without ``force``.
    """
    if not names:
        raise ConfigError("no node names: give --nodes N or --names ...")
    if len(set(names)) != len(names):
        raise ConfigError(
            f"node names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    for name in names:
        if Path(name).name != name or name in (".", ".."):
            raise ConfigError(f"node name {name!r} must be a plain file name (no '/')")
    targets = [out / ROSTER_FILE, *(identity_file(out, n) for n in names)]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(f"refusing to overwrite {existing[:3]} (use --force)")
    identities = [Identity.generate(name) for name in names]
    roster = Roster.of(identities)
    out.mkdir(parents=True, exist_ok=True)
    for identity in identities:
        write_identity(identity, identity_file(out, identity.name))
    write_roster(roster, out / ROSTER_FILE)
    return roster


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedkd keys", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--nodes", type=int, help="number of nodes; names 0 .. N-1")
    which.add_argument("--names", nargs="+", help="explicit node names")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.nodes is not None and args.nodes < 1:
        print(f"fedkd keys: --nodes={args.nodes} is invalid; accepted: >= 1", file=sys.stderr)
        return EXIT_USAGE
    names = [str(i) for i in range(args.nodes)] if args.nodes is not None else list(args.names)
    try:
        roster = create_keys(names, args.out, force=args.force)
    except ConfigError as error:
        print(f"fedkd keys: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"wrote {args.out / ROSTER_FILE} ({len(roster.keys)} identities, digest "
        f"{roster.digest().hex()[:16]}...) and one <name>.identity.json per node"
    )
    print("copy roster.json to every node and the server, each identity file to its node only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
