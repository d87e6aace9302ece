"""Assessment: compare the store with what the catalog asks for this cluster and decide, for every
item, what a run does and why. It reads and never writes, and its result is a value: `execute` makes
what it decided without changing it; `check` reads it as its verdicts.

What is never silently replaced: a CA, the service-account key and the encryption key (secrets.py).
When one is present but broken, or missing while things that depend on it are present, the
assessment is an error that names the file and what to do, and nothing is written. A CA that is not
the one state.json recorded is refused unless imported on purpose (--import-ca).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Iterable, Mapping

from cryptography import x509

from ..spec import ENCRYPTION_PROVIDERS, Cluster
from . import issue
from .actions import CREATE, ERROR, KEEP, REISSUE, Action
from .catalog import Authority, Catalog, Desired, default_catalog, desired_leaves
from .issue import key_fingerprint
from .record import Vouch, digest, epoch, leaf_name, want_digest
from .secrets import EncryptionPlan, ServiceAccountPlan, assess_encryption, assess_service_account
from .state import StoreState, cluster_name_problem, read_state
from .store import ENCRYPTION, STATE, Store, cert_rel, key_rel


@dataclass(frozen=True)
class ImportedCA:
    name: str
    cert: x509.Certificate
    key: issue.PrivateKey
    source: str  # "CERT,KEY" as given, for messages


@dataclass(frozen=True)
class AuthorityPlan:
    """One CA as found, and what the run does with it. `cert`/`key` are what the store (or an import)
    holds; a CA to create has neither, and `execute` makes them."""

    authority: Authority
    action: Action
    cert: x509.Certificate | None = None
    key: issue.PrivateKey | None = None
    write_key: bool = False  # key is new or imported
    write_cert: bool = False

    @property
    def name(self) -> str:
        return self.authority.name

    @property
    def usable(self) -> bool:
        return self.action.action != ERROR


@dataclass(frozen=True)
class LeafPlan:
    """One leaf certificate as found, and what the run does with it."""

    desired: Desired
    action: Action
    key: issue.PrivateKey | None = None  # the existing key, when it is kept and was parsed (not on a vouch)
    new_key: bool = False
    vouch: Vouch | None = None  # a kept leaf as verified now, for the next record (record.py)

    def files(self) -> tuple[str, str]:
        d = self.desired
        return cert_rel(d.entry, d.node), key_rel(d.entry, d.node)


@dataclass(frozen=True)
class Assessment:
    authorities: tuple[AuthorityPlan, ...]
    leaves: tuple[LeafPlan, ...]
    service_account: ServiceAccountPlan
    encryption: EncryptionPlan
    errors: tuple[str, ...]
    state: StoreState  # state.json as this run leaves it (new CAs' fingerprints are added by `execute`)
    tofu_note: str | None = None  # a store without a record: what is recorded on trust
    state_error: Action | None = None  # state.json is unreadable

    def authority(self, name: str) -> AuthorityPlan:
        return next(ca for ca in self.authorities if ca.name == name)

    @property
    def actions(self) -> list[Action]:
        return ([self.state_error] if self.state_error else []) + (
            [ca.action for ca in self.authorities] + [self.service_account.action, self.encryption.action]
            + [leaf.action for leaf in self.leaves])

    @property
    def notes(self) -> list[str]:
        return [n for n in (self.tofu_note, self.encryption.note) if n]

    @property
    def to_issue(self) -> tuple[LeafPlan, ...]:
        """The leaves a run (re)issues: every one not kept."""
        return tuple(leaf for leaf in self.leaves if leaf.action.action != KEEP)


# ---------------------------------------------------------------- CAs ---------------------------

def _signed_leaf_files(store: Store, desired: list[Desired], ca_name: str) -> list[str]:
    """Leaf certificates in the store that this CA signed (or that a lost CA did)."""
    found = []
    for d in desired:
        if d.signer == ca_name and store.read(cert_rel(d.entry, d.node)) is not None:
            found.append(cert_rel(d.entry, d.node))
    return found


def _where(store: Store) -> str:
    """The store's directory, for commands a message suggests."""
    return f"{store.root}/" if store.root is not None else ""


def _assess_ca(store: Store, cluster: Cluster, catalog: Catalog, desired: list[Desired], a: Authority, at: datetime,
               imported: ImportedCA | None, recorded: str | None) -> AuthorityPlan:
    """`recorded`: the CA's public-key fingerprint in state.json (None: not recorded yet); `desired`:
    every leaf of the cluster. An ERROR action carries the message in its reason."""
    crt, key = f"{a.name}.crt", f"{a.name}.key"
    cert_b, key_b = store.read(crt), store.read(key)

    def fail(message: str) -> AuthorityPlan:
        return AuthorityPlan(a, Action(a.name, None, ERROR, message))

    def not_recorded(found: str, subject: str) -> AuthorityPlan:
        where = _where(store)
        return fail(f"{crt} and {key} are not the {a.name} CA this store recorded in {STATE}: recorded {recorded}, "
                    f"found {found}{subject}. hardway never adopts another CA silently: every certificate it signs "
                    f"would be trusted in place of the recorded CA's. Restore the original {a.name} from a backup; or, "
                    f"to adopt this one on purpose, run `hardway pki --import-ca {a.name}={where}{crt},{where}{key}` "
                    f"(every certificate the old {a.name} signed is then re-issued, and must be redeployed)")

    cert = parsed_key = None
    if cert_b is not None:
        try:
            cert = issue.load_cert(cert_b)
        except ValueError as e:
            return fail(f"{crt}: {e}. A CA is never replaced silently: restore it from a backup, "
                        f"or move {crt} and {key} away and import a CA with --import-ca {a.name}=CERT,KEY")
    if key_b is not None:
        try:
            parsed_key = issue.load_private_key(key_b)
        except ValueError as e:
            return fail(f"{key}: {e}. A CA key is never replaced silently: restore it from a backup")

    if imported is not None:
        wanted = key_fingerprint(imported.key)
        if cert is not None and not (issue.same_public_key(cert.public_key(), imported.key)
                                     and cert.subject == imported.cert.subject):
            return fail(f"--import-ca {a.name}: the store already has a different {a.name} "
                        f"({cert.subject.rfc4514_string()}, {key_fingerprint(cert.public_key())}); importing would "
                        f"invalidate every certificate it signed. To switch CAs, move {crt} and {key} out of the "
                        "store first: every certificate it signed is then re-issued by the imported CA")
        if cert is None and parsed_key is not None and not issue.same_public_key(parsed_key, imported.key):
            return fail(f"--import-ca {a.name}: the store already has a different {key}; move it away first")
        if cert is not None and parsed_key is not None and issue.same_public_key(parsed_key, imported.key):
            if recorded is not None and recorded != wanted:
                return AuthorityPlan(a, Action(a.name, None, REISSUE, f"adopted on request (--import-ca): {wanted} replaces the "
                                                           f"recorded {recorded}"), cert=cert, key=parsed_key)
            return AuthorityPlan(a, Action(a.name, None, KEEP, f"the imported CA is already in the store ({wanted})"),
                       cert=cert, key=parsed_key)
        action, why = ((CREATE, f"imported from {imported.source}") if cert is None and parsed_key is None
                       else (REISSUE, f"completed from the import ({imported.source})"))
        if recorded is not None and recorded != wanted:
            why += f"; {wanted} replaces the recorded {recorded}"
        return AuthorityPlan(a, Action(a.name, None, action, why), cert=imported.cert, key=imported.key,
                   write_key=True, write_cert=True)

    if cert is None and parsed_key is None:
        signed = _signed_leaf_files(store, desired, a.name)
        if signed:
            return fail(f"{crt} and {key} are missing, but {len(signed)} certificate(s) signed by that CA are "
                        f"present (e.g. {signed[0]}); a new CA would invalidate a live cluster. Restore {crt} "
                        f"and {key} from a backup, or import a CA with --import-ca {a.name}=CERT,KEY (its "
                        f"certificates are then re-issued), or remove those certificates to start a new CA")
        why = "missing" if recorded is None else (f"missing, and no certificate signed by it remains: a new CA "
                                                  f"(replaces the recorded {recorded})")
        return AuthorityPlan(a, Action(a.name, None, CREATE, why), write_key=True, write_cert=True)
    if cert is not None and parsed_key is None:
        return fail(f"{crt} is present but {key} is missing: nothing can be signed with this CA. Restore {key} "
                    "from a backup; a CA is never replaced silently")
    if cert is None:
        if recorded is not None and key_fingerprint(parsed_key) != recorded:
            return not_recorded(key_fingerprint(parsed_key), f" (the key in {key})")
        signed = _signed_leaf_files(store, desired, a.name)
        if signed:
            return fail(f"{crt} is missing but {key} and {len(signed)} certificate(s) signed by it are present "
                        f"(e.g. {signed[0]}); restore {crt} from a backup (or from any node's "
                        f"{catalog.install_dir}/{crt}, if it is delivered)")
        # An interrupted first run: the key was written, the certificate not yet. Nothing depends on it.
        return AuthorityPlan(a, Action(a.name, None, REISSUE, f"certificate missing; made from the existing {key} "
                                                   "(no certificate signed by it exists yet)"),
                   key=parsed_key, write_cert=True)
    problems = issue.ca_problems(cert, parsed_key, at)
    if problems:
        what = "; ".join(problems)
        return fail(f"{crt}: {what}. hardway never replaces or renews a CA by itself (see docs/pki.md, "
                    f"'Replacing a CA'); restore a good {crt}/{key} pair or import one with --import-ca")
    if recorded is not None and key_fingerprint(parsed_key) != recorded:
        return not_recorded(key_fingerprint(parsed_key), f" ({cert.subject.rfc4514_string()})")
    note = f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    algorithm = issue.key_algorithm(parsed_key)
    if algorithm != cluster.key_algorithm:
        note += f"; its key is {algorithm} (the spec's {cluster.key_algorithm} applies to new keys: a CA is never re-keyed)"
    return AuthorityPlan(a, Action(a.name, None, KEEP, note), cert=cert, key=parsed_key)


def _shared_keys(cas: tuple[AuthorityPlan, ...]) -> tuple[tuple[AuthorityPlan, ...], list[str]]:
    """Two authorities with one key: a certificate either signs would be trusted as the other's.
    Returns the CAs (those sharing a key now in error) and one message per shared key."""
    by_key: dict[str, list[str]] = {}
    for ca in cas:
        if ca.usable and (ca.key is not None or ca.cert is not None):
            by_key.setdefault(key_fingerprint(ca.key if ca.key is not None else ca.cert.public_key()), []).append(ca.name)
    errors, failed = [], {}
    for fp, names in by_key.items():
        if len(names) < 2:
            continue
        both = " and ".join(names)
        message = (f"{both} share one key ({fp}): every certificate one of them signs would be trusted as the "
                   f"other's (e.g. a Kubernetes client certificate as an etcd client). Each CA needs its own key: "
                   f"restore the original from a backup, or import a distinct CA with --import-ca NAME=CERT,KEY")
        errors.append(message)
        failed.update((name, message) for name in names)
    return tuple(replace(ca, action=Action(ca.name, None, ERROR, failed[ca.name])) if ca.name in failed else ca
                 for ca in cas), errors


# ---------------------------------------------------------------- leaves ------------------------

def _vouched(d: Desired, vouch: Vouch, cert_b: bytes | None, key_b: bytes | None, ca_digest: str | None,
             key_algorithm: str, at: datetime) -> bool:
    """The record still vouches for this leaf: the same certificate and key bytes, the same desired
    state, the same (kept, fully checked) CA certificate, and valid now. Anything else: the full check."""
    return bool(ca_digest is not None and vouch.ca == ca_digest and cert_b and key_b
                and vouch.not_before_utc <= at + issue.BACKDATE and at < vouch.not_after_utc
                and vouch.crt == digest(cert_b) and vouch.key == digest(key_b)
                and vouch.want == want_digest(d, key_algorithm))


def _assess_leaf(store: Store, cluster: Cluster, d: Desired, ca: AuthorityPlan, at: datetime,
                 thorough: bool, vouch: Vouch | None = None, ca_digest: str | None = None) -> LeafPlan:
    """`vouch`: what verified.json says this leaf was last verified as; `ca_digest`: the SHA-256 of its
    CA's certificate file when the record is in use and that CA is kept (record.py). A leaf kept after
    its full check under such a CA gets a new vouch; without `ca_digest`, nothing is skipped or made."""
    crt, key = cert_rel(d.entry, d.node), key_rel(d.entry, d.node)
    cert_b, key_b = store.read(crt), store.read(key)
    act = lambda action, reason: Action(d.entry, d.node, action, reason)  # noqa: E731
    if vouch is not None and _vouched(d, vouch, cert_b, key_b, ca_digest, cluster.key_algorithm, at):
        return LeafPlan(d, act(KEEP, f"valid until {vouch.not_after_utc:%Y-%m-%d}"), vouch=vouch)
    if cert_b is None and key_b is None:
        return LeafPlan(d, act(CREATE, "missing"), new_key=True)
    reasons, parsed_key, new_key = [], None, False
    if key_b is None:
        reasons.append("key missing")
        new_key = True
    else:
        try:
            parsed_key = issue.load_private_key(key_b, validate=thorough)
            algorithm = issue.key_algorithm(parsed_key)
            if algorithm != cluster.key_algorithm:
                reasons.append(f"key is {algorithm}, the spec asks for {cluster.key_algorithm}")
                parsed_key, new_key = None, True
        except ValueError as e:
            reasons.append(f"key unreadable: {e}")
            new_key = True
    if cert_b is None:
        reasons.append("certificate missing")
    else:
        try:
            cert = issue.load_cert(cert_b)
        except ValueError as e:
            reasons.append(f"certificate unreadable: {e}")
        else:
            if parsed_key is not None and not issue.same_public_key(cert.public_key(), parsed_key):
                reasons.append("certificate does not match its key")
            if ca.cert is None or not issue.signed_by(cert, ca.cert):
                reasons.append(f"not signed by the current {d.signer} CA")
            reasons += issue.differences(cert, d.identity)
            if cert.not_valid_after_utc <= at:
                reasons.append(f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
            elif cert.not_valid_before_utc > at + issue.BACKDATE:
                reasons.append(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
            if not reasons:
                made = None
                if ca_digest is not None:
                    made = Vouch(digest(cert_b), digest(key_b), want_digest(d, cluster.key_algorithm), ca_digest,
                                 epoch(cert.not_valid_before_utc), epoch(cert.not_valid_after_utc))
                return LeafPlan(d, act(KEEP, f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"), key=parsed_key,
                                vouch=made)
    if not new_key:
        reasons.append("key kept")
    return LeafPlan(d, act(REISSUE, "; ".join(reasons)), key=parsed_key, new_key=new_key)


def assess(cluster: Cluster, store: Store, catalog: Catalog | None = None, at: datetime | None = None,
           imports: Iterable[ImportedCA] = (), thorough: bool = False, new_secrets: Iterable[str] = (),
           retire_old_encryption: bool = False, rename_cluster: bool = False,
           record: Mapping[str, Vouch] | None = None) -> Assessment:
    """Decide what to do with every item of the store; reads, never writes. `thorough` also runs
    OpenSSL's consistency check on every leaf key (check does; reconcile compares each key's public
    half with its certificate, which is what a mismatch or a swapped file breaks). `new_secrets`
    names the secrets to make anew on purpose (--new-secret); `retire_old_encryption` drops the
    encryption keys kept only to read (--retire-old-encryption); `rename_cluster` lets a store recorded
    under another cluster name take the spec's (--rename-cluster). `record`: verified.json's vouches
    (record.py; {} when there is none): a leaf it still vouches for is kept without being parsed, and
    each kept leaf carries its vouch for the next record. None, and always with `thorough`: unused."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    imports = {i.name: i for i in imports}
    new_secrets = set(new_secrets)
    errors: list[str] = []
    state, state_error = read_state(store, ENCRYPTION_PROVIDERS)
    if state_error:
        errors.append(state_error)
    state = state or StoreState()
    name_problem = cluster_name_problem(state, cluster.name, _where(store) or "(memory)", rename_cluster)
    if name_problem:
        errors.append(name_problem)
        state_error = state_error or name_problem
    desired = list(desired_leaves(cluster, catalog))
    cas = tuple(_assess_ca(store, cluster, catalog, desired, a, at, imports.get(a.name), state.fingerprint(a.name))
                for a in catalog.authorities)
    errors += [ca.action.reason for ca in cas if not ca.usable]
    cas, shared = _shared_keys(cas)
    errors += shared
    signers = {ca.name: ca for ca in cas}
    # In use: it holds a certificate a CA signed, or a record. A missing secret is then lost, not yet to make.
    live = store.read(STATE) is not None or any(store.read(cert_rel(d.entry, d.node)) is not None for d in desired)
    sa = assess_service_account(store, cluster, live, "service-account" in new_secrets, catalog.install_dir)
    if sa.action.action == ERROR:
        errors.append(sa.action.reason)
    enc = assess_encryption(store, cluster, state.encryption, live, "encryption" in new_secrets,
                            retire_old_encryption)
    errors += enc.problems
    use_record = record is not None and not thorough
    ca_digests = {}  # only a CA kept after its full check vouches for what it signed
    for ca in cas:
        data = store.read(f"{ca.name}.crt") if use_record and ca.action.action == KEEP and not ca.write_cert else None
        if data:
            ca_digests[ca.name] = digest(data)
    leaves = tuple(_assess_leaf(store, cluster, d, signers[d.signer], at, thorough,
                                record.get(leaf_name(d.entry, d.node)) if use_record else None,
                                ca_digests.get(d.signer))
                   for d in desired if signers[d.signer].usable)
    authorities = {}
    for ca in cas:
        if ca.key is not None or ca.cert is not None:
            authorities[ca.name] = key_fingerprint(ca.key if ca.key is not None else ca.cert.public_key())
    recorded = dict(state.authorities)
    unrecorded = [ca.name for ca in cas if ca.name not in recorded and ca.action.action in (KEEP, REISSUE)
                  and not ca.write_key and ca.name not in imports]
    trusted = [f"{name} {authorities[name]}" for name in unrecorded if name in authorities]
    if enc.tofu:
        trusted.append(f"{ENCRYPTION} as {enc.keys[-1].label} (the spec's provider)")
    tofu_note = (f"{STATE}: no record of what this store holds yet (made before hardway kept one, or by an "
                 f"interrupted first run); `hardway pki` records it as found and trusts it from then on (trust on "
                 f"first use): {'; '.join(trusted)}. Check the fingerprints against your own copy of the CAs "
                 "(docs/pki.md, 'What the store records')" if trusted else None)
    return Assessment(authorities=cas, leaves=leaves, service_account=sa, encryption=enc, errors=tuple(errors),
                      state=StoreState(tuple(authorities.items()), enc.keys, cluster.name), tofu_note=tofu_note,
                      state_error=Action("state", None, ERROR, state_error) if state_error else None)
