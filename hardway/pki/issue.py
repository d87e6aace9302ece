"""Pure generation: keys, CA certificates and leaf certificates as values and PEM bytes.

Nothing here touches the disk (trustme's rule). RSA keys are the slow part of any run, so
`iter_keys` (hardway/keypool.py) spreads them over the CPU cores; ECDSA keys take microseconds and
stay in-process.
Also here: reading a certificate back into the facts the catalog cares about (`differences`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from datetime import datetime, timedelta, timezone
from typing import Iterator, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..keypool import _CURVES, _POOL_THRESHOLD, PrivateKey, generate_key, iter_keys, private_pem
from .catalog import Identity

PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]

BACKDATE = timedelta(minutes=5)  # NotBefore in the past: tolerate clocks a little behind ours
_EKU = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
_EKU_NAMES = {oid: name for name, oid in _EKU.items()}


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# ---------------------------------------------------------------- keys --------------------------

def public_pem(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes, validate: bool = True) -> PrivateKey:
    """Parse a PEM private key; ValueError (with a reason) when it is unusable. `validate=False`
    skips OpenSSL's RSA consistency check (primality of p and q: tens of milliseconds per key), for
    keys we made ourselves or whose public half is compared with their certificate anyway."""
    try:
        key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=not validate)
    except TypeError:
        raise ValueError("the key is encrypted; hardway needs it unencrypted "
                         "(decrypt it: openssl pkey -in KEY -out KEY.plain)") from None
    except Exception as e:  # cryptography raises ValueError or UnsupportedAlgorithm, with terse text
        raise ValueError(f"not a readable PEM private key ({e.__class__.__name__})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"a {type(key).__name__.lstrip('_')} key; hardway uses RSA or ECDSA keys")
    return key


def key_algorithm(key: PrivateKey | PublicKey) -> str:
    """'RSA-2048', 'ECDSA-P256', ...: the spec's spelling, for comparison and messages."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        for name, curve in _CURVES.items():
            if isinstance(key.curve, curve):
                return name
        return f"ECDSA-{key.curve.name}"
    return type(key).__name__


def same_public_key(a: PrivateKey | PublicKey, b: PrivateKey | PublicKey) -> bool:
    return public_pem(a) == public_pem(b)


def key_fingerprint(key: PrivateKey | PublicKey) -> str:
    """`sha256:<hex>` of the public key's SubjectPublicKeyInfo (DER): a key's identity, whatever a
    certificate says about it. The same as `openssl x509 -in CA.crt -noout -pubkey | openssl pkey
    -pubin -outform DER | sha256sum`. The one fingerprint of hardway: state.json records it."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def pooled(algorithm: str, count: int) -> bool:
    """Whether `iter_keys` makes these keys in a process pool (the caller then mostly waits for them)."""
    return algorithm.startswith("RSA-") and count >= _POOL_THRESHOLD and min(os.cpu_count() or 1, count) >= 2


def iter_new_keys(algorithm: str, count: int) -> Iterator[tuple[bytes, PrivateKey]]:
    """`count` new keys as (PEM, key), as they are made: `iter_keys`, without parsing back a PEM made
    in this process (ECDSA, or too few RSA keys for the pool)."""
    if not pooled(algorithm, count):
        for _ in range(count):
            key = generate_key(algorithm)
            yield private_pem(key), key
        return
    pems = iter_keys(algorithm, count)
    try:
        for pem in pems:
            yield pem, load_private_key(pem, validate=False)
    finally:
        pems.close()


def generate_keys(algorithm: str, count: int) -> list[bytes]:
    return list(iter_keys(algorithm, count))


# ---------------------------------------------------------------- certificates ------------------

def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_encipherment=rsa_key and not ca, content_commitment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def subject_name(cn: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    # O before CN, as Go's pkix.Name and openssl print them: "O = system:nodes, CN = system:node:node-0"
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str, key: PrivateKey, validity: timedelta, at: datetime | None = None) -> x509.Certificate:
    at = at or now()
    name = subject_name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - BACKDATE).not_valid_after(at + validity)
            # pathlen 0: this CA signs leaves only; nothing in a cluster needs an intermediate
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, _hash_for(key)))


class Signer:
    """A CA ready to sign leaves: what every certificate it issues shares (issuer, AKI, the hash, the
    NotAfter cap) is worked out once, not per leaf (a 1000-worker cluster has 2000 leaves)."""

    def __init__(self, ca_cert: x509.Certificate, ca_key: PrivateKey):
        self.cert, self.key = ca_cert, ca_key
        self.issuer = ca_cert.subject
        self.not_after_cap = ca_cert.not_valid_after_utc
        self.hash = _hash_for(ca_key)
        self.aki = _extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(ca_cert)), False)

    def issue(self, identity: Identity, public_key: PublicKey, validity: timedelta,
              at: datetime | None = None) -> x509.Certificate:
        """A leaf certificate for `identity`, signed by this CA; never outlives the CA."""
        at = at or now()
        extensions = [_LEAF_CONSTRAINTS, _LEAF_USAGE[isinstance(public_key, rsa.RSAPublicKey)],
                      _extension(x509.ExtendedKeyUsage([_EKU[u] for u in sorted(identity.usages)]), False),
                      _extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False), self.aki]
        sans = [x509.DNSName(d) for d in identity.dns_names] + [x509.IPAddress(ip) for ip in identity.ip_addresses]
        if sans:
            extensions.append(_extension(x509.SubjectAlternativeName(sans), False))
        builder = x509.CertificateBuilder(
            issuer_name=self.issuer, subject_name=subject_name(identity.cn, identity.organizations),
            public_key=public_key, serial_number=x509.random_serial_number(), not_valid_before=at - BACKDATE,
            not_valid_after=min(at + validity, self.not_after_cap), extensions=extensions)
        return builder.sign(self.key, self.hash)


def _extension(value: x509.ExtensionType, critical: bool) -> x509.Extension:
    return x509.Extension(value.oid, critical, value)


_LEAF_CONSTRAINTS = _extension(x509.BasicConstraints(ca=False, path_length=None), True)
_LEAF_USAGE = {rsa_key: _extension(_key_usage(ca=False, rsa_key=rsa_key), True) for rsa_key in (False, True)}


def issue(identity: Identity, public_key: PublicKey, ca_cert: x509.Certificate, ca_key: PrivateKey,
          validity: timedelta, at: datetime | None = None) -> x509.Certificate:
    """A leaf certificate for `identity`, signed by the CA; never outlives the CA (`Signer` for many)."""
    return Signer(ca_cert, ca_key).issue(identity, public_key, validity, at)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    """Parse one PEM certificate; ValueError when it is unusable."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except Exception as e:
        raise ValueError(f"not a readable PEM certificate ({e.__class__.__name__})") from None


# ---------------------------------------------------------------- reading back ------------------

def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def ca_problems(cert: x509.Certificate, key: PrivateKey | None, at: datetime) -> list[str]:
    """Why this certificate (and key) cannot serve as a CA; empty when it can."""
    problems = []
    if not is_ca(cert):
        problems.append("it is not a CA certificate (basicConstraints CA:TRUE is missing)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            problems.append("its keyUsage does not allow signing certificates (keyCertSign)")
    except x509.ExtensionNotFound:
        pass
    if key is not None and not same_public_key(cert.public_key(), key):
        problems.append("the key does not match the certificate")
    if cert.not_valid_after_utc <= at:
        problems.append(f"it expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if not isinstance(cert.public_key(), (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        problems.append("its key is neither RSA nor ECDSA")
    return problems


def san_texts(cert: x509.Certificate) -> set[str]:
    """The certificate's SANs as `DNS:name` (lowercase: DNS names are case-insensitive) and `IP:address`
    texts, as openssl prints them: the one SAN reader of hardway."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return ({_san_text(d.lower()) for d in san.get_values_for_type(x509.DNSName)}
            | {_san_text(ip) for ip in san.get_values_for_type(x509.IPAddress)})


def cert_usages(cert: x509.Certificate) -> set[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    return {_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku}


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:
        return False
    return True


def _san_text(value) -> str:
    return f"IP:{value}" if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else f"DNS:{value}"


def differences(cert: x509.Certificate, identity: Identity) -> list[str]:
    """How the certificate differs from what the catalog asks for; empty when it matches."""
    found = []
    want_subject = subject_name(identity.cn, identity.organizations)
    if cert.subject != want_subject:
        found.append(f"subject is {cert.subject.rfc4514_string()!r}, want {want_subject.rfc4514_string()!r}")
    want = {_san_text(d) for d in identity.dns_names} | {_san_text(i) for i in identity.ip_addresses}
    have = san_texts(cert)
    if want != have:
        change = [f"+{s}" for s in sorted(want - have)] + [f"-{s}" for s in sorted(have - want)]
        found.append(f"SAN list changed ({', '.join(change)})")
    usages = cert_usages(cert)
    if usages != set(identity.usages):
        found.append(f"usages are {', '.join(sorted(usages)) or 'none'}, want {', '.join(sorted(identity.usages))}")
    if is_ca(cert):
        found.append("it is a CA certificate, want a leaf (CA:FALSE)")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature or ku.key_cert_sign:
            found.append("keyUsage is wrong (want digitalSignature, no keyCertSign)")
    except x509.ExtensionNotFound:
        found.append("keyUsage is missing")
    return found
