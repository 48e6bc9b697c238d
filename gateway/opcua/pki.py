"""The gateway's OPC UA application instance certificate and the servers it trusts.

Layout under `gateway.data_dir`:

    pki/edgegw.der          the gateway's certificate (DER), made by `edgegw certs create`
    pki/edgegw.pem          its private key (PEM, mode 0600)
    pki/trusted/*.der       server certificates the gateway trusts
    pki/rejected/*.der      certificates presented by servers it did not trust, kept so an
                            engineer can check the thumbprint and move them to trusted/

A device may pin its server's certificate instead (`security.server_certificate`); then only
that certificate is accepted. There is no trust-on-first-use and no fallback to no security.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME, KEY_NAME = "edgegw.der", "edgegw.pem"
DEFAULT_DAYS = 5 * 365 + 1  # drivers/opcua/plugin.py CERT_DAYS: the same five years


def application_uri(gateway_id: str) -> str:
    """The ApplicationUri of a gateway: in its certificate and in every session it opens."""
    return f"urn:edgegw:{gateway_id}"


@dataclass(frozen=True, slots=True)
class Pki:
    root: Path

    @property
    def certificate(self) -> Path:
        return self.root / CERT_NAME

    @property
    def private_key(self) -> Path:
        return self.root / KEY_NAME

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


def create_certificate(
    cert_path: Path,
    key_path: Path,
    uri: str,
    *,
    common_name: str = "edgegw",
    days: int = DEFAULT_DAYS,
) -> x509.Certificate:
    """A self-signed application instance certificate (OPC 10000-6 6.2.2) for `uri`, with the
    host name as a DNS name, for both roles (the gateway is a client of its devices and a server
    to SCADA); the key is written readable by the owner only."""
    host = socket.gethostname()
    key = cert_gen.generate_private_key()
    uses = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        common_name,
        {"organizationName": "edgegw"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        extended=uses,
        days=days,
    )
    for p in (cert_path, key_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert


def load_der(path: Path) -> bytes:
    """A certificate file (DER or PEM) as DER bytes."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def first_certificate(der: bytes) -> bytes:
    """The leading certificate of a DER blob that may carry its chain after it."""
    if len(der) < 4 or der[1] != 0x82:
        return der
    return der[: int.from_bytes(der[2:4], "big") + 4]


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint as OPC UA tools show it (UaExpert, Kepware)."""
    return hashlib.sha1(der).hexdigest().upper()


def describe(der: bytes) -> str:
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(names[0].value) if names else cert.subject.rfc4514_string()
        return f"'{cn}', SHA-1 {_colons(thumbprint(der))}"
    except ValueError:
        return f"SHA-1 {_colons(thumbprint(der))}"


def uri_of(cert_path: Path) -> str | None:
    """The ApplicationUri (URI subject alternative name) a certificate file carries."""
    cert = x509.load_der_x509_certificate(load_der(cert_path))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def expiry_problem(cert_path: Path, now: dt.datetime | None = None) -> str | None:
    cert = x509.load_der_x509_certificate(load_der(cert_path))
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        return f"certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.not_valid_before_utc > now + dt.timedelta(minutes=5):
        return f"certificate {cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"
    return None


class Untrusted(Exception):
    """The server's certificate is not trusted; the message says which file to trust."""


def check_server(der: bytes, pki: Pki, pinned: Path | None, device: str, endpoint: str) -> None:
    """Raise Untrusted unless `der` is the pinned certificate or one in pki/trusted/."""
    der = first_certificate(der)
    if not der:
        raise Untrusted(f"{endpoint} presented no certificate for a secured endpoint")
    if pinned is not None:
        try:
            if load_der(pinned) == der:
                return
            saved = keep_rejected(der, pki, device)
            raise Untrusted(
                f"the certificate of {endpoint} ({describe(der)}) is not the pinned {pinned}; "
                f"it is saved as {saved}: if the server's certificate was renewed, check the "
                f"thumbprint on the server and copy that file over {pinned}"
            )
        except FileNotFoundError:
            saved = keep_rejected(der, pki, device)
            raise Untrusted(
                f"server_certificate {pinned} does not exist; {endpoint} presented {describe(der)}, "
                f"saved as {saved}: check the thumbprint on the server and copy it to {pinned}"
            ) from None
        except ValueError as exc:
            raise Untrusted(f"server_certificate {pinned} is not a certificate: {exc}") from None
    if is_trusted(der, pki):
        return
    saved = keep_rejected(der, pki, device)
    raise Untrusted(
        f"the certificate of {endpoint} ({describe(der)}) is not trusted; it is saved as {saved}: "
        f"check the thumbprint on the server, then move that file into {pki.trusted}/ "
        f"(or set security.server_certificate to it)"
    )


def is_trusted(der: bytes, pki: Pki) -> bool:
    """Whether `der` is one of the certificates in pki/trusted/ (DER or PEM files)."""
    if pki.trusted.is_dir():
        for f in sorted(pki.trusted.iterdir()):
            if f.is_file():
                try:
                    if load_der(f) == der:
                        return True
                except (OSError, ValueError):
                    continue
    return False


def keep_rejected(der: bytes, pki: Pki, name: str) -> Path:
    """Save a refused peer's certificate in pki/rejected/ for an engineer to check and trust."""
    path = pki.rejected / f"{name}-{thumbprint(der)[:16].lower()}.der"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(der)
    except OSError:
        pass  # the message still names the certificate by thumbprint
    return path


def _colons(hexstr: str) -> str:
    return ":".join(hexstr[i : i + 2] for i in range(0, len(hexstr), 2))
