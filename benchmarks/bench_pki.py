"""Benchmark of `hardway pki`: a full run into an empty store, a second run with nothing to do, and the
floor: the time the same number of key generations and signatures takes on all cores (one process
per core, already started, each making its share of the keys and signing as many messages with a
CA key of the same algorithm: the crypto the run cannot avoid, with nothing else), measured in the
same case right after the run. Also the peak memory (maxrss).

    python benchmarks/bench_pki.py                                   # 3, 100, 1000 workers; ECDSA-P256 and RSA-2048
    python benchmarks/bench_pki.py --workers 3,100 --algorithms ECDSA-P256
    python benchmarks/bench_pki.py --bundles                         # `bundle`: 3, 100, 1000 workers

Each case runs in a fresh interpreter so its peak memory is its own. A benchmark, not a test:
the figures depend on the machine (record them in benchmarks/README.md with the machine's size).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


_TBS = bytes(range(256)) * 4  # what a signature covers: about a certificate's to-be-signed part


def _floor_share(algorithm: str, ca_pem: bytes, count: int) -> int:
    """One core's share of the floor: `count` new keys, `count` signatures by the CA key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from hardway.pki import issue

    ca_key = issue.load_private_key(ca_pem, validate=False)
    for _ in range(count):
        issue.generate_key(algorithm)
        if algorithm.startswith("RSA-"):
            ca_key.sign(_TBS, padding.PKCS1v15(), hashes.SHA256())
        else:
            ca_key.sign(_TBS, ec.ECDSA(hashes.SHA256()))
    return count


def keygen_sign_floor(algorithm: str, count: int) -> float:
    """Seconds to make `count` keys and `count` signatures across every core (the pool started first)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from hardway.pki import issue

    cores = os.cpu_count() or 1
    ca_pem = issue.private_pem(issue.generate_key(algorithm))
    shares = [count // cores + (i < count % cores) for i in range(cores)]
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_floor_share, [algorithm] * cores, [ca_pem] * cores, [0] * cores))  # start every worker
        t0 = time.perf_counter()
        assert sum(pool.map(_floor_share, [algorithm] * cores, [ca_pem] * cores, shares)) == count
        return time.perf_counter() - t0


def one(workers: int, algorithm: str, keep_in: str | None = None) -> dict:
    """One case; its store is made in `keep_in` (left for the caller to delete once every case ran:
    deleting thousands of files right before the next case makes its file creation slower, on ext4
    without a journal, which skips recently freed inodes) or in a temporary directory."""
    from make_large import large_spec

    from hardway import spec
    from hardway.pki import CREATE, reconcile

    text = large_spec(workers).replace("keyAlgorithm: ECDSA-P256", f"keyAlgorithm: {algorithm}")
    if workers > 4096:  # a /12 holds 4096 node /24s: a /10 (10.128.0.0-10.191.255.255) holds 16384
        text = text.replace("podCIDR: 10.192.0.0/12", "podCIDR: 10.128.0.0/10")
    cluster = spec.loads(text, source=f"large-{workers}.yaml")
    with (contextlib.nullcontext(tempfile.mkdtemp(prefix="case-", dir=keep_in)) if keep_in
          else tempfile.TemporaryDirectory(prefix="bench-pki-")) as tmp:
        store = Path(tmp) / "pki"
        c0, t0 = time.process_time(), time.perf_counter()
        first = reconcile(cluster, store)
        c1, t1 = time.process_time(), time.perf_counter()
        second = reconcile(cluster, store)
        c2, t2 = time.process_time(), time.perf_counter()
        rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the RSA key pool's workers are not counted
        files = sum(1 for p in store.rglob("*") if p.is_file())
    created = sum(1 for a in first.actions if a.action == CREATE and a.entry != "encryption")  # one key each
    assert all(a.action == "keep" for a in second.actions)
    floor = keygen_sign_floor(algorithm, created)
    return {"algorithm": algorithm, "workers": workers, "keys": created, "files": files,
            "first_s": round(t1 - t0, 3), "second_s": round(t2 - t1, 3), "floor_s": round(floor, 3),
            "first_cpu_s": round(c1 - c0, 3), "second_cpu_s": round(c2 - c1, 3),  # this process: user + system
            "peak_rss_mib": round(rss_self / 1024, 1), "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 1)}


def one_bundle(workers: int) -> dict:
    """`bundle` for N workers (ECDSA-P256), the store already reconciled: a first run into an empty
    bundles directory, then a run with nothing to change; peak memory of this interpreter."""
    from make_large import large_spec

    from hardway import spec
    from hardway.bundle import write_bundles
    from hardway.pki import load_materials, reconcile

    cluster = spec.loads(large_spec(workers), source=f"large-{workers}.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        out = Path(tmp)
        reconcile(cluster, out / "pki")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        first = write_bundles(cluster, load_materials(cluster, out / "pki"), out)
        t1 = time.perf_counter()
        second = write_bundles(cluster, load_materials(cluster, out / "pki"), out)
        t2 = time.perf_counter()
        size = sum(p.stat().st_size for p in (out / "bundles").glob("*.tar.gz"))
    assert second.count("unchanged") == len(first.results)
    return {"workers": workers, "bundles": len(first.results), "first_s": round(t1 - t0, 2),
            "second_s": round(t2 - t1, 2), "archives_mib": round(size / 2**20, 1),
            "rss_before_mib": round(rss_before / 1024, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def bundles_main(workers: list[int], as_json: bool) -> None:
    rows = []
    for n in workers:
        out = subprocess.run([sys.executable, __file__, "--one-bundle", str(n)], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]) if as_json else f"  bundle x {n} workers: {rows[-1]['first_s']} s",
              file=sys.stdout if as_json else sys.stderr, flush=True)
    if as_json:
        return
    header = ("workers", "bundles", "first run s", "no-op run s", "archives MiB", "RSS before MiB", "peak RSS MiB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(" | ".join(str(r[k]) for k in ("workers", "bundles", "first_s", "second_s", "archives_mib",
                                             "rss_before_mib", "peak_rss_mib")))
    print(f"\n{os.cpu_count()} CPUs; ECDSA-P256; first run = empty bundles directory, store present; "
          "peak RSS flat = bundles streamed one node at a time")


def _median_row(runs: list[dict]) -> dict:
    """One row for the repetitions of a case: the median of each figure, and the median of the
    first/floor ratios (each taken within its own repetition, floor and run back to back)."""
    import statistics

    row = dict(runs[-1])
    for key in ("first_s", "second_s", "floor_s", "first_cpu_s", "second_cpu_s", "peak_rss_mib", "load_average"):
        row[key] = round(statistics.median(r[key] for r in runs), 3)
    ratios = [r["first_s"] / r["floor_s"] for r in runs if r["floor_s"]]
    row["ratio"] = round(statistics.median(ratios), 3) if ratios else None
    row["ratios"] = [round(x, 3) for x in ratios]
    row["repeat"] = len(runs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", action="store_true", help="benchmark `bundle` (per worker count) instead of `pki`")
    parser.add_argument("--one-bundle", type=int, metavar="WORKERS", help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="3,100,1000")
    parser.add_argument("--algorithms", default="ECDSA-P256,RSA-2048")
    parser.add_argument("--one", nargs=2, metavar=("WORKERS", "ALGORITHM"), help=argparse.SUPPRESS)
    parser.add_argument("--keep-in", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each case N times (each in a fresh interpreter, the floor right after the run) and "
                             "report the medians: RSA key generation takes a random time, so one run of a few "
                             "hundred keys varies by several per cent")
    args = parser.parse_args()
    if args.one_bundle is not None:
        print(json.dumps(one_bundle(args.one_bundle)))
        return
    if args.bundles:
        bundles_main([int(w) for w in args.workers.split(",")], args.json)
        return
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.keep_in)))
        return
    rows = []
    stores = tempfile.mkdtemp(prefix="bench-pki-")  # every case's store, deleted once all have run
    try:
        _cases(args, rows, stores)
    finally:
        shutil.rmtree(stores, ignore_errors=True)
    if args.json:
        return
    _print_table(rows)


def _cases(args, rows: list[dict], stores: str) -> None:
    for algorithm in args.algorithms.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            runs = []
            for _ in range(max(args.repeat, 1)):
                out = subprocess.run([sys.executable, __file__, "--one", str(workers), algorithm, "--keep-in", stores],
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            row = _median_row(runs)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"  {algorithm} x {workers} workers: {row['first_s']} s", file=sys.stderr, flush=True)


def _print_table(rows: list[dict]) -> None:
    header = ("algorithm", "workers", "keys", "first run s", "keygen+sign floor s", "first/floor", "no-op run s",
              "first run CPU s", "no-op CPU s", "peak RSS MiB", "load avg")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        print(" | ".join(str(v) for v in (r["algorithm"], r["workers"], r["keys"], r["first_s"], r["floor_s"], ratio,
                                          r["second_s"], r["first_cpu_s"], r["second_cpu_s"], r["peak_rss_mib"],
                                          r["load_average"])))
    print(f"\n{rows[0]['cpus']} CPUs; medians of {rows[0]['repeat']} run(s) per case (first/floor: the median of "
          f"the ratios, each within one run); first run = empty store to complete; floor = the same number of key "
          "generations and signatures on all cores, measured right after; no-op = second run, everything kept; "
          "CPU = user + system time of the run's own process (a loaded machine stretches wall time, not this); "
          "peak RSS = the run's own process (RSA keys are made in a pool of worker processes besides it); "
          "load avg = 1-minute load average at the end of the case")


if __name__ == "__main__":
    main()
