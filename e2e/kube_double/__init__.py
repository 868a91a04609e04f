"""A local Kubernetes API test double for the end-to-end tests: an HTTP API server with the semantics kubectl, Helm
and kube-runtime rely on, and a deployment runner that turns Deployments into local processes.

Test code only; what it knowingly does differently from a real cluster is listed in docs/kube-double.md."""
