"""New private keys, across the CPU cores for RSA: the slow part of any PKI run (hardway.pki.issue
re-exports what is here).

It lives outside the hardway.pki package on purpose: a key worker forks from a server that imports
this module, and importing it loads `cryptography` and nothing else (no catalog, spec, YAML or
pydantic), so the pool's first key comes a few tens of milliseconds after the pool starts, not
after a second start-up of hardway.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

_CURVES = {"ECDSA-P256": ec.SECP256R1, "ECDSA-P384": ec.SECP384R1}
# Below this many RSA keys a process pool costs more than it saves.
_POOL_THRESHOLD = 4


def generate_key(algorithm: str) -> PrivateKey:
    if algorithm.startswith("RSA-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm]())
    raise ValueError(f"unknown key algorithm {algorithm!r}")


def private_pem(key: PrivateKey) -> bytes:
    """PKCS#1 / SEC1 PEM, unencrypted: what kubeadm writes and every component reads."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _generate_pem(algorithm: str) -> bytes:
    return private_pem(generate_key(algorithm))


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(hardway_pid: int) -> None:
    """Pool worker initializer: die with hardway. A worker's parent is the forkserver, which exits
    only once every holder of its alive pipe has (the workers hold it too): so each worker watches
    hardway's process itself (a pidfd) and exits when it is gone, and dies with the forkserver too
    (PR_SET_PDEATHSIG). A SIGKILLed run then leaves no worker computing keys and holding the
    caller's stderr; the forkserver and the resource tracker follow once the workers are gone."""
    import signal
    import threading
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    threading.Thread(target=_exit_when_gone, args=(hardway_pid,), daemon=True).start()


def _exit_when_gone(pid: int) -> None:
    import select
    import time
    try:
        fd = os.pidfd_open(pid)  # readable once the process has exited
    except (OSError, AttributeError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(0.5)
    os._exit(1)


class _Terminated(KeyboardInterrupt):
    """SIGTERM during key generation: unwound like Ctrl-C, so the pool is shut down, not orphaned."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def iter_keys(algorithm: str, count: int) -> Iterator[bytes]:
    """`count` new private keys as PEM, as they are made. RSA keys come from a process pool across
    the cores (a forkserver, so the workers inherit none of our descriptors, e.g. the store lock);
    ECDSA keys take microseconds and are made in-process."""
    workers = min(os.cpu_count() or 1, count)
    if not algorithm.startswith("RSA-") or count < _POOL_THRESHOLD or workers < 2:
        for _ in range(count):
            yield _generate_pem(algorithm)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # workers fork from a server that imported this module once
    import signal
    import threading
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)  # SIGTERM like SIGINT while the pool runs
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_die_with_parent,
                               initargs=(os.getpid(),))
    try:
        yield from pool.map(_generate_pem, [algorithm] * count, chunksize=1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
