"""`hardway deploy`: put each node's bundle on the node over SSH and run its own install.sh, in the
workstation README's bring-up order (docs/deploy.md).

- targets.py: who to connect to, from the spec, with every default applied (pure; the Ansible
  inventory reads the same).
- plan.py: what to do on each node, in which order, from what the nodes report (pure).
- remote.py: the SSH edge (Fabric), imported only when a deploy runs.
- run.py: a run: the local checks, the phases in order, the API wait and the manifests.
"""
