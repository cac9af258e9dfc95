"""Self-signed TLS material for a fedkd deployment: a CA and a SuperLink server certificate.

    python deploy/certs.py [--out deploy/certs] [--san HOST ...] [--days 365] [--force]

Writes, in ``--out``:

- ``ca.crt`` / ``ca.key``: the certificate authority (keep ``ca.key`` private);
- ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the CA, valid for
  ``localhost``, ``127.0.0.1``, ``::1``, ``superlink`` (the compose service name) and every
  ``--san`` given (a DNS name or an IP address).

The SuperLink is started with ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem
--ssl-keyfile server.key``; SuperNodes, SuperExecs and the ``flwr`` CLI trust ``ca.crt``
(``--root-certificates``, or ``root-certificates`` in ``$FLWR_HOME/config.toml``).
For testing only: a production federation uses certificates from its own PKI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SANS = ("localhost", "127.0.0.1", "::1", "superlink")


@dataclass(frozen=True)
class CertificatePaths:
    """Where the generated files are."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedkd"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(entries: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for entry in dict.fromkeys(entries):  # keep order, drop duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_certificates(
    out_dir: Path,
    *,
    extra_sans: Sequence[str] = (),
    days: int = 365,
    force: bool = False,
) -> CertificatePaths:
    """Create a CA and a CA-signed SuperLink certificate in ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder for ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` (created if missing).
    extra_sans
        Host names or IP addresses the SuperLink is reached under, beside the defaults
        (``localhost``, ``127.0.0.1``, ``::1``, ``superlink``).
    days
        Validity of both certificates.
    force
        Overwrite existing files; otherwise existing files are an error.

    Returns
    -------
    CertificatePaths
        The four files written.
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(
        ca_cert=out_dir / "ca.crt",
        ca_key=out_dir / "ca.key",
        server_cert=out_dir / "server.pem",
        server_key=out_dir / "server.key",
    )
    existing = [p for p in vars(paths).values() if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(str(p) for p in existing)} already exist; pass --force to replace them"
        )

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate clock skew
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fedkd test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("superlink"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(_san([*DEFAULT_SANS, *extra_sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    _write(paths.ca_key, _key_pem(ca_key), private=True)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(paths.server_key, _key_pem(server_key), private=True)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), private=False)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "certs",
        help="output folder (default: deploy/certs)",
    )
    parser.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="HOST",
        help="extra DNS name or IP address of the SuperLink (repeatable)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity in days")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    try:
        paths = generate_certificates(
            args.out, extra_sans=args.san, days=args.days, force=args.force
        )
    except (FileExistsError, ValueError) as error:
        parser.error(str(error))
    for path in vars(paths).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
