"""The PKI stage: from the Cluster and the catalog (pki/catalog.yaml), every key, certificate and
secret of the cluster, kept in the PKI store (<out>/pki) and reconciled on every run.

    reconcile(cluster, store_dir, import_ca=(), new_secrets=(), retire_old_encryption=False)
                                                 -> ReconcileResult(actions, materials, notes)
    plan_actions(cluster, store_dir)             -> [Action(entry, node, action, reason)]  (writes nothing)
    plan_report(cluster, store_dir)              -> ReconcileResult(actions, None, notes)  (writes nothing)
    preview(cluster, store_dir)                  -> ReconcileResult as `reconcile` would return it (writes nothing)
    check_store(cluster, store_dir)              -> CheckReport (rows, problems, warnings; .to_dict())
    renew(cluster, store_dir, entry, node, rotate_keys)
    load_materials(cluster, store_dir)           -> Materials   (a reconciled store)
    generate_materials(cluster)                  -> Materials   (in memory, for tests)
    node_files(cluster, materials, node_name)    -> [PlannedFile] (what a node or WORKSTATION receives)

docs/pki.md describes the store, the decisions and how to replace a CA.
"""

from .catalog import Catalog, CatalogError, Desired, Identity, default_catalog, desired_leaves, load_catalog
from .check import CertRow, CheckReport, check_store
from .materials import Materials, node_files
from .reconcile import (CREATE, ERROR, KEEP, REISSUE, Action, ActionKind, ImportedCA, ReconcileResult,
                        generate_materials, load_materials, parse_import, plan_actions, plan_report, preview,
                        reconcile, renew)

__all__ = [
    "Action", "ActionKind", "Catalog", "CatalogError", "CertRow", "CheckReport", "CREATE", "Desired", "ERROR", "Identity",
    "ImportedCA", "KEEP", "Materials", "REISSUE", "ReconcileResult", "check_store", "default_catalog",
    "desired_leaves", "generate_materials", "load_catalog", "load_materials", "node_files", "parse_import",
    "plan_actions", "plan_report", "preview", "reconcile", "renew",
]
