"""The kinds the double serves: the built-in ones the chart, kubectl, Helm and the operator use, and one per stored
CustomResourceDefinition version. Everything else in the double looks a kind up here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    spec_replicas: str  # dotted paths, as in a CRD's subresources.scale
    status_replicas: str
    label_selector: str | None = None


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # a status subresource: the main resource ignores status, /status ignores the rest
    scale: Scale | None = None
    printer_columns: tuple[dict, ...] = ()
    categories: tuple[str, ...] = ()
    schema: dict | None = field(default=None, compare=False, hash=False)  # a CRD's openAPIV3Schema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: the same objects whichever version is asked for."""
        return (self.group, self.plural)


DEPLOYMENT_SCALE = Scale(".spec.replicas", ".status.replicas", ".status.selector")

BUILT_IN: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",), status=True),
    Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Kind("", "v1", "Secret", "secrets", True),
    Kind("", "v1", "Service", "services", True, ("svc",), status=True, categories=("all",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Kind("", "v1", "Event", "events", True, ("ev",)),
    Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",), status=True, scale=DEPLOYMENT_SCALE,
         categories=("all",)),
    # Served so that clients can map them (Helm's readiness watcher looks a Deployment's ReplicaSets up); the
    # runner creates neither, so they stay empty.
    Kind("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), status=True,
         scale=Scale(".spec.replicas", ".status.replicas", ".status.selector")),
    Kind("", "v1", "Pod", "pods", True, ("po",), status=True, categories=("all",)),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), status=True),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Kind("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, ("crd", "crds"),
         status=True),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", True),
    Kind("events.k8s.io", "v1", "Event", "events", True, ("ev",)),
)

# Built-in lists merged by key rather than replaced, as their Go types declare (patchMergeKey / listType=map).
# Strategic merge patch and server-side apply both use this; a CRD's lists are atomic unless its schema says otherwise.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "tolerations": ("key",),
}
# Ports are keyed differently in containers and Services.
PORT_KEYS = {"containerPort": ("containerPort", "protocol"), "port": ("port", "protocol")}
SET_LISTS = frozenset({"finalizers"})


def crd_kinds(crd: dict) -> list[Kind]:
    """The kinds a CustomResourceDefinition serves (every served version)."""
    spec = crd["spec"]
    names = spec["names"]
    kinds = []
    for v in spec["versions"]:
        if not v.get("served", True):
            continue
        sub = v.get("subresources") or {}
        scale = sub.get("scale")
        kinds.append(Kind(
            group=spec["group"],
            version=v["name"],
            kind=names["kind"],
            plural=names["plural"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            status="status" in sub,
            scale=Scale(scale["specReplicasPath"], scale["statusReplicasPath"], scale.get("labelSelectorPath"))
            if scale else None,
            printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
            categories=tuple(names.get("categories") or ()),
            schema=(v.get("schema") or {}).get("openAPIV3Schema"),
        ))
    return kinds


class Registry:
    """Built-in kinds plus the kinds of the stored CRDs, found by (group, version, plural) or by (apiVersion, kind)."""

    def __init__(self) -> None:
        self._crds: dict[str, list[Kind]] = {}

    def all(self) -> list[Kind]:
        return list(BUILT_IN) + [k for ks in self._crds.values() for k in ks]

    def set_crd(self, crd: dict) -> None:
        self._crds[crd["metadata"]["name"]] = crd_kinds(crd)

    def drop_crd(self, name: str) -> list[Kind]:
        return self._crds.pop(name, [])

    def find(self, group: str, version: str, plural: str) -> Kind | None:
        return next((k for k in self.all() if (k.group, k.version, k.plural) == (group, version, plural)), None)

    def by_gvk(self, api_version: str, kind: str) -> Kind | None:
        return next((k for k in self.all() if (k.api_version, k.kind) == (api_version, kind)), None)

    def groups(self) -> dict[str, dict[str, list[Kind]]]:
        """group → version → kinds, in a stable order (core group first)."""
        out: dict[str, dict[str, list[Kind]]] = {}
        for k in self.all():
            out.setdefault(k.group, {}).setdefault(k.version, []).append(k)
        return out
