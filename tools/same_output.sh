#!/usr/bin/env bash
# Prove that two source trees of hardway produce the same output: same files, same bytes, same
# messages, same exit codes, nothing re-issued.
#
#   tools/same_output.sh OLD_TREE NEW_TREE [SPEC ...]     (default specs: examples/kthw.yaml ha.yaml)
#
# For each spec: OLD makes a PKI store and bundles; a copy of them is run through NEW's `bundle`,
# `pki`, `plan` and `check` and must come out byte-identical (diff -r) with the same stdout, stderr
# and exit codes as OLD running the same commands on another copy. A fresh NEW run must print the
# same messages and make the same file names and modes as a fresh OLD run (keys are random, so
# their bytes differ). Make OLD_TREE with e.g. `git archive HEAD | tar -x -C /tmp/old`.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); shift 2
specs=("$@"); [ ${#specs[@]} -gt 0 ] || specs=("$new/examples/kthw.yaml" "$new/examples/ha.yaml")
work=$(mktemp -d /tmp/same-output.XXXXXX)
status=0

run() {  # run TREE OUT LOG COMMAND ARGS...: one hardway command, its output made path-independent
    local tree=$1 out=$2 log=$3; shift 3
    local rc=0
    (cd "$work" && PYTHONPATH="$tree" python -m hardway "$@" --out "$out" >"$log.out" 2>"$log.err") || rc=$?
    sed -i "s#$out#<out>#g" "$log.out" "$log.err"
    echo "exit $rc" >>"$log.out"
}

listing() { (cd "$1" && find . -printf '%y %m %p\n' | sort); }

for spec in "${specs[@]}"; do
    name=$(basename "$spec" .yaml); d="$work/$name"; mkdir -p "$d"
    run "$old" "$d/orig" "$d/old-fresh" bundle --spec "$spec"
    run "$new" "$d/fresh" "$d/new-fresh" bundle --spec "$spec"
    cp -a "$d/orig" "$d/a"; cp -a "$d/orig" "$d/b"
    for cmd in bundle pki plan check; do
        run "$old" "$d/a" "$d/old-$cmd" "$cmd" --spec "$spec"
        run "$new" "$d/b" "$d/new-$cmd" "$cmd" --spec "$spec"
    done
    for what in fresh bundle pki plan check; do
        for s in out err; do
            if ! diff -u "$d/old-$what.$s" "$d/new-$what.$s"; then
                echo "DIFFERENT: $name: $what std$s"; status=1
            fi
        done
    done
    if ! diff <(listing "$d/orig") <(listing "$d/fresh"); then echo "DIFFERENT: $name: fresh file names or modes"; status=1; fi
    for copy in a b; do
        if ! diff -r "$d/orig" "$d/$copy" >/dev/null || ! diff <(listing "$d/orig") <(listing "$d/$copy"); then
            echo "DIFFERENT: $name: re-run with $([ $copy = a ] && echo OLD || echo NEW) changed the output"; status=1
        fi
    done
    [ $status -ne 0 ] || echo "same: $name (fresh run, bundle, pki, plan, check; $(find "$d/orig" -type f | wc -l) files byte-identical)"
done
[ $status -ne 0 ] && echo "kept for inspection: $work" || rm -rf "$work"
exit $status
