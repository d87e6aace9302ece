"""hardway: everything needed to install Kubernetes the hard way, from one cluster.yaml."""

__version__ = "0.1.0"
