"""The task surface, through the real command lines in subprocesses: `inv` in the checkout and the
`hardway` console command (its code: `python -m hardway.cli`).

A bad spec must fail with the message on stderr, a non-zero exit, no traceback, and no file
created or changed: we snapshot the working folder (every path, size and mtime) around each run.
"""

from __future__ import annotations

import os
import re
import copy
from pathlib import Path

import pytest
import yaml

TASKS = ("init", "validate", "schema", "plan", "pki", "kubeconfigs", "units", "bundle", "check", "credentials", "renew",
         "clean")
# which of --spec / --out each task takes (init's --spec is the file it writes)
FLAGS = {
    "init": ("--spec",), "validate": ("--spec",), "clean": ("--out",), "schema": (),
    **{t: ("--spec", "--out") for t in ("plan", "pki", "kubeconfigs", "units", "bundle", "check", "credentials", "renew")},
}
TOOLS = ("inv", "hardway")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime (ns): any write shows up."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# ------------------------------------------------------------------ listing and help ------------

@pytest.mark.parametrize("tool", TOOLS)
def test_list_names_every_task_and_the_default(tool, run_cli, repo_root, tmp_path):
    result = run_cli(["--list"], cwd=repo_root if tool == "inv" else tmp_path, tool=tool)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^  (\S+)", result.stdout, re.M))
    assert set(TASKS) <= listed, result.stdout
    assert re.search(r"^Default task: bundle$", result.stdout, re.M), result.stdout
    no_traceback(result)


@pytest.mark.parametrize("task", TASKS)
def test_help_shows_the_flags(task, capsys, tmp_path, monkeypatch):
    """In-process, with the console command's Program over a copy of the task collection (Invoke
    consumes each task's help texts when it parses, so a second run in one process would lose them).
    test_help_through_the_command runs the command itself."""
    from invoke import Program

    from hardway import cli, tasks
    monkeypatch.chdir(tmp_path)
    program = Program(namespace=copy.deepcopy(tasks.ns), version=cli.program.version, name="hardway", binary="hardway")
    program.run(["hardway", task, "--help"], exit=False)
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"Usage: hardway [--core-opts] {task} ")
    for flag in ("--spec", "--out"):
        if flag in FLAGS[task]:
            # the flag and its explanation
            assert re.search(rf"{flag}=STRING\s+\S", help_text), f"{task} --help lacks {flag}:\n{help_text}"
        else:
            assert flag not in help_text
    assert snapshot(tmp_path) == {}


def test_help_through_the_command(run_cli, tmp_path):
    result = run_cli(["renew", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"--spec=STRING\s+\S", result.stdout) and re.search(r"--out=STRING\s+\S", result.stdout)
    assert "--rotate-keys" in result.stdout


def test_inv_and_hardway_give_the_same_help(run_cli, repo_root, tmp_path):
    inv = run_cli(["bundle", "--help"], cwd=repo_root, tool="inv")
    hw = run_cli(["bundle", "--help"], cwd=tmp_path)
    body = lambda out: out.split("Docstring:", 1)[1]  # noqa: E731  (the usage line names the program)
    assert body(inv.stdout) == body(hw.stdout)


# ------------------------------------------------------------------ validate --------------------

@pytest.mark.parametrize("name", ["kthw", "ha", "large"])
def test_validate_each_example(name, run_cli, example_path, tmp_path):
    path = example_path(name)
    expected_name = yaml.safe_load(path.read_text())["name"]
    result = run_cli(["validate", "--spec", str(path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert expected_name in result.stdout
    assert "valid" in result.stdout
    no_traceback(result)
    assert snapshot(tmp_path) == {}  # validate writes nothing


def test_validate_from_the_checkout_with_inv(run_cli, repo_root, example_path):
    path = example_path("ha")
    result = run_cli(["validate", "--spec", str(path)], cwd=repo_root, tool="inv")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(path.read_text())["name"] in result.stdout


def test_validate_without_spec_uses_the_builtin_example(run_cli, example_path, tmp_path):
    result = run_cli(["validate"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "built-in example" in result.stderr and "kthw" in result.stderr
    assert yaml.safe_load(example_path("kthw").read_text())["name"] in result.stdout
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("task", ["plan", "bundle", "pki", "check"])
def test_no_spec_over_an_existing_out_is_refused(task, run_cli, example_path, tmp_path):
    """The user's spec is cluster.yml, not cluster.yaml: the built-in example must not be planned or
    written over the store and bundles of their cluster."""
    (tmp_path / "cluster.yml").write_bytes(example_path("ha").read_bytes())
    first = run_cli(["bundle", "--spec", "cluster.yml"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = snapshot(tmp_path)
    result = run_cli([task], cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    no_traceback(result)
    assert "--spec" in result.stderr and "cluster.yml" in result.stderr and "hardway init" in result.stderr
    assert "to remove" not in result.stdout
    assert snapshot(tmp_path) == before


def test_the_fallback_to_the_example_is_a_warning(run_cli, tmp_path):
    result = run_cli(["plan"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: no ./cluster.yaml here: using the built-in example kthw" in result.stderr


def test_validate_prefers_cluster_yaml_in_the_folder(run_cli, example_path, tmp_path):
    (tmp_path / "cluster.yaml").write_bytes(example_path("ha").read_bytes())
    result = run_cli(["validate"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "built-in" not in result.stderr
    assert yaml.safe_load(example_path("ha").read_text())["name"] in result.stdout


def test_validate_warns_on_an_even_number_of_controllers(run_cli, tmp_path):
    spec = {"name": "even", "apiServer": {"endpoint": "10.0.0.100"},
            "nodes": [{"name": f"c{i}", "address": f"10.0.0.{i + 1}", "roles": ["controller", "worker"]} for i in range(2)]}
    (tmp_path / "even.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli(["validate", "--spec", "even.yaml"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "etcd" in result.stderr


@pytest.mark.parametrize("provider", ["aescbc", "aesgcm"])
def test_validate_warns_on_a_provider_kubernetes_does_not_recommend(run_cli, tmp_path, provider):
    spec = {"name": "weak", "encryption": {"provider": provider},
            "nodes": [{"name": "server", "address": "10.0.0.1", "roles": ["controller", "worker"]}]}
    (tmp_path / "weak.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli(["validate", "--spec", "weak.yaml"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and provider in result.stderr and "secretbox" in result.stderr
    assert "weak" in result.stdout


# ------------------------------------------------------------------ bad specs -------------------

VALID = {
    "name": "lab",
    "pki": {"keyAlgorithm": "ECDSA-P256"},
    "nodes": [{"name": "server", "address": "10.240.0.10", "roles": ["controller"]},
              {"name": "node-0", "address": "10.240.0.20", "roles": ["worker"]},
              {"name": "node-1", "address": "10.240.0.21", "roles": ["worker"]}],
}


def variant(**top) -> str:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data.update(top)
    return yaml.safe_dump(data, sort_keys=False)


BAD_SPECS = {
    # id: (text, fragments the message must hold)
    "yaml-syntax": ("name: lab\nnodes: [\n", ("line 3", "column", "YAML")),
    "unknown-key": (variant(netwrok={"podCIDR": "10.200.0.0/16"}), ("netwrok", "'network'")),
    "duplicate-names": (variant(nodes=VALID["nodes"][:2] + [{**VALID["nodes"][2], "name": "node-0"}]),
                        ("nodes[2].name", "'node-0'", "unique")),
    "ed25519": (variant(pki={"keyAlgorithm": "Ed25519"}), ("pki.keyAlgorithm", "Ed25519", "ECDSA-P256")),
    "version-float": (variant(kubernetesVersion=1.37), ("kubernetesVersion", "1.37", "v1.37.2")),
    "too-many-workers": (variant(network={"podCIDR": "10.200.0.0/24", "nodePodCIDRSize": 26},
                                 nodes=VALID["nodes"] + [{"name": f"n{i}", "address": f"10.240.1.{i}", "roles": ["worker"]}
                                                         for i in range(1, 4)]),
                         ("network.podCIDR", "room for 4 ", "5 workers")),
    "empty-file": ("", ("empty",)),
    "not-a-mapping": ("- a\n- b\n", ("mapping", "list")),
}


@pytest.fixture
def bad_spec(request, tmp_path):
    text, fragments = BAD_SPECS[request.param]
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "bad.yaml").write_text(text)
    return folder, fragments


def check_failed_cleanly(result, fragments, before, folder) -> None:
    assert result.returncode != 0
    no_traceback(result)
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in stderr:\n{result.stderr}"
    assert "bad.yaml" in result.stderr  # names the file
    assert snapshot(folder) == before, "the failed run changed the working folder"


@pytest.mark.parametrize("bad_spec", sorted(BAD_SPECS), indirect=True)
def test_bad_spec_through_hardway(bad_spec, run_cli, request):
    folder, fragments = bad_spec
    before = snapshot(folder)
    runs = [["validate", "--spec", "bad.yaml"]]
    if request.node.callspec.id in WITH_BUNDLE:
        runs.append(["bundle", "--spec", "bad.yaml", "--out", "out"])
    for args in runs:
        result = run_cli(args, cwd=folder)
        check_failed_cleanly(result, fragments, before, folder)
    assert not (folder / "out").exists()


WITH_BUNDLE = ("yaml-syntax", "duplicate-names", "too-many-workers", "empty-file")


@pytest.mark.parametrize("bad_spec", ["yaml-syntax", "ed25519", "too-many-workers"], indirect=True)
def test_bad_spec_through_inv_from_the_checkout(bad_spec, run_cli, repo_root):
    folder, fragments = bad_spec
    before = snapshot(folder)
    top_before = sorted(p.name for p in repo_root.iterdir())
    spec_file = str(folder / "bad.yaml")
    for args in (["validate", "--spec", spec_file], ["bundle", "--spec", spec_file, "--out", str(folder / "out")]):
        result = run_cli(args, cwd=repo_root, tool="inv")
        check_failed_cleanly(result, fragments, before, folder)
    assert not (folder / "out").exists()
    # nothing new at the top of the checkout either (the repository's files are edited by others
    # while tests run, so only the set of names is compared here)
    assert sorted(p.name for p in repo_root.iterdir()) == top_before


def test_missing_spec_file(run_cli, tmp_path):
    result = run_cli(["validate", "--spec", "nowhere.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "nowhere.yaml" in result.stderr and "no such file" in result.stderr
    assert "hardway init" in result.stderr
    no_traceback(result)
    assert snapshot(tmp_path) == {}


# ------------------------------------------------------------------ init ------------------------

def test_init_writes_the_example_and_refuses_to_overwrite(run_cli, example_path, tmp_path):
    result = run_cli(["init", "--example", "ha"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "cluster.yaml"
    assert written.read_bytes() == example_path("ha").read_bytes()

    written.write_text("# my edits\n")
    before = snapshot(tmp_path)
    again = run_cli(["init", "--example", "ha"], cwd=tmp_path)
    assert again.returncode != 0
    assert "--force" in again.stderr
    no_traceback(again)
    assert snapshot(tmp_path) == before and written.read_text() == "# my edits\n"

    forced = run_cli(["init", "--example", "kthw", "--force"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert written.read_bytes() == example_path("kthw").read_bytes()


def test_init_to_another_path_and_bad_arguments(run_cli, example_path, tmp_path):
    result = run_cli(["init", "--example", "large", "--spec", "big.yaml"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "big.yaml").read_bytes() == example_path("large").read_bytes()

    before = snapshot(tmp_path)
    unknown = run_cli(["init", "--example", "nope"], cwd=tmp_path)
    assert unknown.returncode != 0 and all(n in unknown.stderr for n in ("kthw", "ha", "large"))
    unwritable = run_cli(["init", "--spec", "no/such/dir/cluster.yaml"], cwd=tmp_path)
    assert unwritable.returncode != 0 and "no/such/dir/cluster.yaml" in unwritable.stderr
    for r in (unknown, unwritable):
        no_traceback(r)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ clean -----------------------

def make_output(out: Path) -> None:
    for rel in ("pki/ca.key", "pki/ca.crt", "bundles/server.tar.gz", "nodes/server/etc/kubernetes/x.yaml",
                "kubeconfigs/admin.kubeconfig"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    # hardway's records of what it wrote there (docs/bundles.md, "Links"): clean deletes only these
    (out / ".bundles.written").write_text("server.tar.gz\n")
    (out / ".kubeconfigs.written").write_text("admin.kubeconfig\n")
    (out / "nodes" / ".hardway-written").write_text("server/etc/kubernetes/x.yaml\n")
    (out / "notes.txt").write_text("mine")


def test_clean_keeps_the_pki_store(run_cli, tmp_path):
    out = tmp_path / "out"
    make_output(out)
    result = run_cli(["clean"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "pki"]
    assert (out / "pki" / "ca.key").read_text() == "x"
    assert "pki" in result.stdout  # says it kept it


def test_clean_pki_needs_yes(run_cli, tmp_path):
    out = tmp_path / "out"
    make_output(out)
    before = snapshot(tmp_path)
    refused = run_cli(["clean", "--pki"], cwd=tmp_path)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    no_traceback(refused)
    assert snapshot(tmp_path) == before

    result = run_cli(["clean", "--pki", "--yes", "--out", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # a file hardway did not write stays


def test_clean_leaves_a_folder_of_other_files_alone(run_cli, example_path, tmp_path):
    """`clean --out .` in a project folder must not take the user's spec with it."""
    (tmp_path / "cluster.yaml").write_bytes(example_path("kthw").read_bytes())
    (tmp_path / "docs").mkdir()
    before = snapshot(tmp_path)
    result = run_cli(["clean", "--out", "."], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before


def test_clean_without_output(run_cli, tmp_path):
    result = run_cli(["clean"], cwd=tmp_path)
    assert result.returncode == 0 and "nothing to clean" in result.stdout
    assert snapshot(tmp_path) == {}


# ------------------------------------------------------------------ configuration ---------------

def test_defaults_come_from_hardway_configuration(run_cli, example_path, tmp_path):
    """HARDWAY_SPEC / HARDWAY_OUT and `-f FILE` reach every task through Invoke's configuration."""
    env = {"HARDWAY_SPEC": str(example_path("kthw")), "HARDWAY_OUT": "from-env"}
    result = run_cli(["clean"], cwd=tmp_path, extra_env=env)
    assert result.returncode == 0 and "from-env" in result.stdout, result.stdout + result.stderr
    (tmp_path / "cfg.yaml").write_text(f"spec: {example_path('ha')}\n")
    result = run_cli(["-f", "cfg.yaml", "validate"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(example_path("ha").read_text())["name"] in result.stdout
    result = run_cli(["validate", "--spec", str(example_path("kthw"))], cwd=tmp_path, extra_env=env | {"HARDWAY_SPEC": "nope.yaml"})
    assert result.returncode == 0, result.stderr  # the flag wins


def test_the_task_class_maps_errors_to_exits():
    from invoke import Context, Exit

    from hardway.errors import HardwayError
    from hardway.tasklib import task

    @task
    def failing(c):
        raise HardwayError("it broke")

    @task
    def unhappy(c):
        return 3

    with pytest.raises(Exit) as e:
        failing(Context())
    assert (e.value.message, e.value.code) == ("error: it broke", 1)
    with pytest.raises(Exit) as e:
        unhappy(Context())
    assert e.value.code == 3


# ------------------------------------------------------------------ the command line says only what it does

INVOKE_RUNNER_FLAGS = ("--dry", "--pty", "--echo", "--warn-only", "--prompt-for-sudo-password", "--hide",
                       "--command-timeout", "--write-pyc")


def test_help_offers_no_flag_of_invokes_shell_runner(run_cli, tmp_path):
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in INVOKE_RUNNER_FLAGS:
        assert flag not in result.stdout, flag
    for flag in ("--list", "--config", "--version", "--help"):
        assert flag in result.stdout


def test_dry_is_refused_and_points_at_plan(run_cli, tmp_path):
    result = run_cli(["--dry", "bundle"], cwd=tmp_path)
    assert result.returncode != 0 and "hardway plan" in result.stderr, result.stderr
    no_traceback(result)
    assert snapshot(tmp_path) == {}, "a refused dry run writes nothing"


@pytest.mark.parametrize("args, words", [
    (["bundel"], ["no task 'bundel'", "did you mean 'bundle'?"]),
    (["lab.stauts"], ["did you mean 'lab.status'?"]),
    (["validate", "--spce", "x.yaml"], ["unknown flag '--spce'", "did you mean '--spec'?"]),
    (["--spec", "x.yaml", "validate"], ["--spec is a flag of the task", "`hardway validate --spec x.yaml`"]),
    (["pki", "--import-ca"], ["--import-ca needs a value", "NAME=CERT,KEY"]),
    (["pki", "--import-ca", "--out", "o2"], ["--import-ca needs a value"]),
    (["validate", "--spec"], ["--spec needs a value"]),
])
def test_a_command_line_it_cannot_read_says_what_to_type(args, words, run_cli, tmp_path):
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    for w in words:
        assert w in result.stderr, result.stderr
    no_traceback(result)
    assert snapshot(tmp_path) == {}


def test_plan_json_and_its_detailed_exit_code(run_cli, example_path, tmp_path):
    import json
    (tmp_path / "cluster.yaml").write_bytes(example_path("kthw").read_bytes())
    result = run_cli(["plan", "--json", "--detailed-exitcode"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # changes pending
    data = json.loads(result.stdout)
    assert data["ok"] and data["changes"] and data["cluster"] == "kubernetes-the-hard-way"
    assert {a["action"] for a in data["pki"]["actions"]} == {"create"}
    assert {b["status"] for b in data["bundles"]} == {"new"}
    assert run_cli(["plan"], cwd=tmp_path).returncode == 0, "without the flag, 0 as before"
    assert run_cli(["bundle"], cwd=tmp_path).returncode == 0
    result = run_cli(["plan", "--json", "--detailed-exitcode"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # nothing to change
    assert json.loads(result.stdout)["changes"] is False
    result = run_cli(["plan", "--detailed-exitcode"], cwd=tmp_path)
    assert result.returncode == 0 and "0 to create, 0 to change" in result.stdout
    (tmp_path / "cluster.yaml").write_text(example_path("kthw").read_text().replace("10.240.0.21", "10.240.0.31"))
    assert run_cli(["plan", "--detailed-exitcode"], cwd=tmp_path).returncode == 2
    (tmp_path / "cluster.yaml").write_text("name: x\nnodes: 3\n")
    result = run_cli(["plan", "--detailed-exitcode"], cwd=tmp_path)
    assert result.returncode == 1 and "nodes: must be a list" in result.stderr  # an error is 1, never 2


@pytest.mark.parametrize("task", ["check", "plan"])
def test_json_even_when_the_spec_is_bad(task, run_cli, tmp_path):
    import json
    (tmp_path / "bad.yaml").write_text("name: x\nnodes: 3\n")
    result = run_cli([task, "--json", "--spec", "bad.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    data = json.loads(result.stdout)
    assert data["ok"] is False and "nodes: must be a list" in data["error"]
    no_traceback(result)


def test_user_values_are_never_read_as_markup(run_cli, tmp_path):
    """IPv6 addresses print in brackets in URLs, and paths may hold '[': none may vanish as rich markup."""
    from render_helpers import V6_SPEC
    (tmp_path / "six[1].yaml").write_text(V6_SPEC.replace("endpoint: api.six.example", "endpoint: fd00::10"))
    result = run_cli(["validate", "--spec", "six[1].yaml"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "https://[fd00::10]:6443" in result.stdout, result.stdout
    assert "https://[fd00::11]:2380" in result.stdout and "six[1].yaml" in result.stdout
    result = run_cli(["plan", "--spec", "six[1].yaml", "--out", "o[x]"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PKI store o[x]/pki" in result.stdout and "bundles in o[x]/bundles" in result.stdout
    result = run_cli(["bundle", "--spec", "six[1].yaml", "--out", "o[x]"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(o[x]/bundles)" in result.stdout and "o[x]/bundles/w0.tar.gz" in result.stdout


def test_a_tab_in_the_spec_says_yaml_forbids_tabs(run_cli, tmp_path):
    (tmp_path / "tab.yaml").write_text("name: x\nnodes:\n\t- name: a\n")
    result = run_cli(["validate", "--spec", "tab.yaml"], cwd=tmp_path)
    assert result.returncode != 0 and "line 3" in result.stderr
    assert "tabs are not allowed for indentation" in result.stderr, result.stderr


def test_bundle_ends_with_the_next_step(run_cli, example_path, tmp_path):
    (tmp_path / "cluster.yaml").write_bytes(example_path("kthw").read_bytes())
    result = run_cli(["bundle"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("next: `tar -xzf out/bundles/workstation.tar.gz`") and "workstation/README.md" in last


# Start-up (issue 12): `--version`, `--help` and `--list` must not import what only a task's body needs.
# Timings are the benchmark's (benchmarks/bench.py); this checks the cause, which a test can see.
HEAVY_AT_START = ("hardway.spec", "hardway.pki", "hardway.render", "hardway.bundle", "hardway.pipeline",
                  "hardway.lab.lab", "pydantic", "cryptography", "jinja2", "rich.console")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["--list"], ["validate", "--help"]])
def test_start_up_imports_nothing_heavy(argv):
    import subprocess
    import sys
    probe = ("import sys, runpy\n"
             f"sys.argv = ['hardway', *{argv!r}]\n"
             "try:\n"
             "    runpy.run_module('hardway', run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "print('\\nMODULES', ' '.join(sorted(sys.modules)))\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert "MODULES" in res.stdout, res.stderr
    loaded = set(res.stdout.rsplit("MODULES", 1)[1].split())
    assert "invoke" in loaded  # the probe did run the command line
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_AT_START))
    assert not heavy, f"hardway {' '.join(argv)} imports {heavy}"
