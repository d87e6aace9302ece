"""hardway runs as root: no link it did not make may turn a write, a delete or a chmod against the
machine (issue 10). The operator may link `out/` or any directory below it, and hardway follows
those directory links; but it never deletes a file it did not write, never changes the mode of a
file reached through a link, replaces a file-level link instead of writing through it, and never
creates a lock file through a dangling link (docs/pki.md, docs/bundles.md: "Links")."""

from __future__ import annotations

import os
import stat

import pytest

from hardway import pipeline
from hardway.errors import HardwayError
from render_helpers import V6_SPEC
from hardway import spec as spec_mod


def _cluster(tmp_path):
    f = tmp_path / "cluster.yaml"
    f.write_text(V6_SPEC)
    return spec_mod.load(f)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _victim(tmp_path, name="victim", data=b"not hardway's\n", mode=0o644):
    v = tmp_path / "elsewhere" / name
    v.parent.mkdir(exist_ok=True)
    v.write_bytes(data)
    os.chmod(v, mode)
    return v


def test_pki_never_chmods_a_key_link(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    pipeline.reconcile_pki(c, out)
    victim = _victim(tmp_path)
    (out / "pki" / "passwd.key").symlink_to(victim)
    result = pipeline.reconcile_pki(c, out)
    assert _mode(victim) == 0o644, "pki chmodded the target of a *.key link"
    assert any("passwd.key" in n and "link" in n for n in result.notes)


def test_pki_never_chmods_the_target_of_a_node_dir_link_to_a_file(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    pipeline.reconcile_pki(c, out)
    victim = _victim(tmp_path)
    node_dir = out / "pki" / "nodes" / c.workers[0].name
    for p in node_dir.iterdir():
        p.unlink()
    node_dir.rmdir()
    node_dir.symlink_to(victim)
    with pytest.raises(HardwayError):
        pipeline.reconcile_pki(c, out)
    assert _mode(victim) == 0o644 and victim.read_bytes() == b"not hardway's\n"


@pytest.mark.parametrize("lock", ["pki/.lock", ".bundles.lock"])
def test_a_dangling_lock_link_is_refused_not_followed(tmp_path, lock):
    c, out = _cluster(tmp_path), tmp_path / "out"
    (out / "pki").mkdir(parents=True, mode=0o700)
    target = tmp_path / "elsewhere" / "created-by-hardway"
    target.parent.mkdir()
    (out / lock).symlink_to(target)
    with pytest.raises(HardwayError, match="link"):
        pipeline.bundle(c, out)
    assert not target.exists(), "a lock file was created through a dangling link"


def test_a_linked_bundles_dir_is_followed_but_foreign_files_are_kept(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    share = tmp_path / "share"
    share.mkdir(mode=0o755)
    foreign = share / "gone.tar.gz"  # looks like the bundle of a node not in the spec
    foreign.write_bytes(b"the operator's\n")
    out.mkdir()
    (out / "bundles").symlink_to(share)
    run = pipeline.bundle(c, out)
    assert (out / "bundles").is_symlink() and (share / "workstation.tar.gz").is_file()
    assert foreign.read_bytes() == b"the operator's\n", "deleted a file hardway did not write"
    assert "gone" not in run.removed and any("gone.tar.gz" in n for n in run.notes)


def test_bundles_hardway_wrote_are_still_removed_with_the_node(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    pipeline.bundle(c, out)
    worker = c.workers[0].name
    assert (out / "bundles" / f"{worker}.tar.gz").exists()
    f = tmp_path / "cluster.yaml"
    f.write_text("\n".join(line for line in V6_SPEC.splitlines() if f"name: {worker}," not in line) + "\n")
    run = pipeline.bundle(spec_mod.load(f), out)
    assert worker in run.removed and not (out / "bundles" / f"{worker}.tar.gz").exists()


def test_a_linked_kubeconfigs_dir_keeps_foreign_files_and_file_links_are_replaced(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    first = pipeline.kubeconfigs(c, out)
    admin = (out / "kubeconfigs" / "admin.kubeconfig").read_bytes()
    share = tmp_path / "share"
    os.rename(out / "kubeconfigs", share)
    (out / "kubeconfigs").symlink_to(share)
    foreign = share / "mine.kubeconfig"
    foreign.write_bytes(b"the operator's\n")
    victim = _victim(tmp_path, data=admin, mode=0o644)  # same bytes: "unchanged", then a chmod
    (share / "admin.kubeconfig").unlink()
    (share / "admin.kubeconfig").symlink_to(victim)
    done = pipeline.kubeconfigs(c, out)
    assert foreign.exists() and "mine.kubeconfig" not in done.removed
    assert any("mine.kubeconfig" in n for n in done.notes)
    assert _mode(victim) == 0o644, "chmodded a file through a link"
    assert not (share / "admin.kubeconfig").is_symlink() and _mode(share / "admin.kubeconfig") == 0o600
    assert first.written


def test_a_linked_nodes_dir_is_written_in_place_and_foreign_files_kept(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    share = tmp_path / "share"
    share.mkdir(mode=0o700)
    foreign = share / "notes.txt"
    foreign.write_text("the operator's\n")
    out.mkdir()
    (out / "nodes").symlink_to(share)
    pipeline.units(c, out)
    pipeline.units(c, out)
    assert (out / "nodes").is_symlink(), "the operator's link was replaced"
    assert (share / "workstation").is_dir() and foreign.exists()


def test_files_an_operator_left_in_the_nodes_tree_are_not_deleted(tmp_path):
    c, out = _cluster(tmp_path), tmp_path / "out"
    pipeline.units(c, out)
    foreign = out / "nodes" / "workstation" / "my-notes.txt"
    foreign.write_text("the operator's\n")
    trees = pipeline.units(c, out)
    left = [p for p in out.iterdir() if p.name.startswith(".nodes.old-")]
    assert len(left) == 1 and (left[0] / "workstation" / "my-notes.txt").read_text() == "the operator's\n"
    assert any("my-notes.txt" in n for n in trees.notes)


def test_clean_deletes_only_what_hardway_wrote(tmp_path):
    """`clean` follows the same rule: the operator's files in out/bundles (a linked share here),
    out/kubeconfigs and out/nodes stay; hardway's own go; a directory left empty goes too."""
    import subprocess
    import sys
    cluster, out = _cluster(tmp_path), tmp_path / "out"
    share = tmp_path / "share"
    share.mkdir()
    out.mkdir()
    (out / "bundles").symlink_to(share)
    pipeline.bundle(cluster, out)
    from hardway.render.write import write_kubeconfigs, write_node_trees
    materials = pipeline.reconcile_pki(cluster, out).materials
    write_kubeconfigs(cluster, materials, out / "kubeconfigs")
    write_node_trees(cluster, materials, out / "nodes")
    mine = share / "operator-notes.txt"
    mine.write_text("mine\n")
    (out / "nodes" / "README.operator").write_text("mine too\n")
    res = subprocess.run([sys.executable, "-m", "hardway", "clean", "--out", str(out)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert mine.read_text() == "mine\n" and (out / "nodes" / "README.operator").read_text() == "mine too\n"
    assert not list(share.glob("*.tar.gz")), "hardway's own bundles are removed"
    assert (out / "bundles").is_symlink() and share.is_dir(), "the operator's link and directory are left as they are"
    assert not (out / "kubeconfigs").exists(), "a directory of hardway's files only is removed whole"
    assert not list((out / "nodes").rglob("*.yaml")), "hardway's node files are removed"
    assert (out / "pki").is_dir()
    assert "did not write" in res.stdout


def test_plan_says_what_bundle_will_do_to_a_bundle_no_longer_in_the_spec(tmp_path):
    """plan follows bundle's rule: a recorded bundle of a removed node is deleted, a foreign one kept."""
    from hardway.bundle.diff import BundleStatus, plan_bundles
    cluster, out = _cluster(tmp_path), tmp_path / "out"
    pipeline.bundle(cluster, out)
    theirs = out / "bundles" / "gone.tar.gz"
    theirs.write_bytes((out / "bundles" / "workstation.tar.gz").read_bytes())
    assert "  - {name: w0," in V6_SPEC
    smaller = spec_mod.loads(V6_SPEC.replace("  - {name: w0,", "  # - {name: w0,"))
    changes = {c.node: c for c in plan_bundles(smaller, out)}
    assert changes["gone"].status == BundleStatus.UNCHANGED and "did not" in changes["gone"].note
    removed = [n.name for n in cluster.nodes if n.name not in {m.name for m in smaller.nodes}]
    assert removed == ["w0"]
    for node in removed:
        assert changes[node].status == BundleStatus.REMOVED


def test_a_tampered_record_never_leads_a_delete_out_of_its_directory(tmp_path):
    """The records are files on disk: an entry with `..`, an absolute path or a path through a link
    must not make hardway (root) delete anything outside the directory it wrote."""
    from hardway.fsutil import remove_written
    directory = tmp_path / "nodes"
    (directory / "n0").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = [outside / "a", outside / "b", outside / "c"]
    for v in victims:
        v.write_text("keep\n")
    (directory / "linked").symlink_to(outside)
    (directory / "n0" / "mine").write_text("hardway's\n")
    names = {"../outside/a", str(outside / "b"), "linked/c", "n0/mine"}
    removed, notes = remove_written(directory, names, names)
    assert removed == ["n0/mine"]
    assert all(v.read_text() == "keep\n" for v in victims)
    assert len(notes) == 3 and all("not a plain path" in n for n in notes)


@pytest.mark.parametrize("how", ["remove_written", "clean_generated"])
def test_a_directory_swapped_for_a_link_mid_walk_never_leads_a_delete_out(tmp_path, how):
    """The race the record walks used to have (check the path, then unlink by path): another process
    swaps a directory below the output for a link to a directory outside while hardway deletes.
    A thread swaps `out/sub` between a real directory and a link to `victim/` as fast as it can;
    hardway deletes `sub/f` (recorded) hundreds of times; the file in `victim/` must survive."""
    import threading

    from hardway.fsutil import clean_generated, remove_written, write_record, record_beside

    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    stop = threading.Event()

    def swap():
        real, link = out / "sub", out / "sub-link"
        while not stop.is_set():
            try:
                os.rename(real, out / "sub-real")
                os.rename(link, real)          # now `sub` is the link to victim/
                os.rename(real, link)
                os.rename(out / "sub-real", real)
            except OSError:
                pass

    for _ in range(300):
        (victim / "f").write_text("precious")
        out.mkdir(exist_ok=True)
        (out / "sub").mkdir(exist_ok=True)
        (out / "sub" / "f").write_text("generated")
        if not (out / "sub-link").is_symlink():
            (out / "sub-link").symlink_to(victim)
        swapper = threading.Thread(target=swap)
        stop.clear()
        swapper.start()
        try:
            if how == "remove_written":
                remove_written(out, ["sub/f"], {"sub/f"})
            else:
                write_record(record_beside(out), ["sub/f", "sub-link"])
                clean_generated(out)
        finally:
            stop.set()
            swapper.join()
        assert (victim / "f").read_text() == "precious"
        for leftover in ("sub-real", "sub"):  # undo a swap the thread left half done
            if (out / leftover).is_symlink():
                (out / leftover).unlink()
        if out.exists() and (out / "sub-real").is_dir() and not (out / "sub").exists():
            os.rename(out / "sub-real", out / "sub")
