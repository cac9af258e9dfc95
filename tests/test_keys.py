"""``fedkd keys`` and the identity/roster files it writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedkd.cli import keygen as keys
from fedkd.secagg.errors import ConfigError
from fedkd.secagg.identity import read_identity, read_roster


def test_keys_writes_a_roster_and_one_private_identity_per_node(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert keys.main(["--nodes", "3", "--out", str(out)]) == 0
    roster = read_roster(out / "roster.json")
    assert sorted(roster.keys) == ["0", "1", "2"]
    publics = set()
    for name in ("0", "1", "2"):
        path = out / f"{name}.identity.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        identity = read_identity(path, roster)
        assert identity.name == name and roster.keys[name] == identity.public_key
        assert roster.verifies(name, b"m", identity.sign(b"m"))
        assert not roster.verifies("1" if name != "1" else "0", b"m", identity.sign(b"m"))
        publics.add(identity.public_key)
    assert len(publics) == 3


def test_keys_refuses_to_overwrite_and_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keys.main(["--names", "a", "b", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "roster.json").read_text()
    assert keys.main(["--names", "a", "--out", str(tmp_path)]) == keys.EXIT_USAGE
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "roster.json").read_text() == before
    assert keys.main(["--names", "a", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "roster.json").read_text() != before
    assert keys.main(["--names", "x", "x", "--out", str(tmp_path / "n")]) == keys.EXIT_USAGE
    assert keys.main(["--names", "../evil", "--out", str(tmp_path / "n")]) == keys.EXIT_USAGE
    assert keys.main(["--nodes", "0", "--out", str(tmp_path / "n")]) == keys.EXIT_USAGE
    assert not (tmp_path / "n").exists()


def test_roster_and_identity_files_fail_clearly(tmp_path: Path) -> None:
    keys.create_keys(["0", "1"], tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_roster(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_roster(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="is not a fedkd-roster/v1 file"):
        read_roster(bad)
    bad.write_text(json.dumps({"format": "fedkd-roster/v1", "identities": {"0": "abcd"}}))
    with pytest.raises(ConfigError, match="2 bytes, expected 32"):
        read_roster(bad)
    other = tmp_path / "other"
    keys.create_keys(["0"], other)
    with pytest.raises(ConfigError, match="the roster has no key for '0' or a different one"):
        read_identity(other / "0.identity.json", read_roster(tmp_path / "roster.json"))
    with pytest.raises(ConfigError, match="is not a fedkd-identity/v1 file"):
        read_identity(tmp_path / "roster.json")


def test_simulated_identities_are_per_run_and_the_roster_digest_binds_every_key() -> None:
    from fedkd.secagg.identity import Roster, simulated_identities

    seed = b"s" * 16
    first = simulated_identities(seed, 1, ["0", "1"])
    assert simulated_identities(seed, 1, ["0", "1"]) == first
    other_run = simulated_identities(seed, 2, ["0", "1"])
    assert other_run["0"].public_key != first["0"].public_key
    roster = Roster.of(first.values())
    assert Roster.of(other_run.values()).digest() != roster.digest()
    assert Roster(dict(roster.keys)).digest() == roster.digest()
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        simulated_identities(b"short", 1, ["0"])
    with pytest.raises(ConfigError, match="two identities are named"):
        Roster.of([first["0"], first["0"]])


def test_static_pair_keys_agree_and_the_montgomery_map_matches_x25519() -> None:
    from fedkd.secagg.identity import Identity, Roster, montgomery_public

    a, b, c = (Identity.generate(n) for n in "abc")
    roster = Roster.of([a, b, c])
    for identity in (a, b, c):
        raw = identity.agreement_key.public_key().public_bytes_raw()
        assert raw == montgomery_public(identity.public_key)
    assert a.pair_key(roster, "b") == b.pair_key(roster, "a")
    assert a.pair_key(roster, "b") != a.pair_key(roster, "c")
    other = Roster.of([a, b])  # the key is bound to the roster it was derived under
    assert a.pair_key(other, "b") != a.pair_key(roster, "b")
    with pytest.raises(ConfigError, match="no Montgomery form"):
        montgomery_public((1).to_bytes(32, "little"))
