"""Kubernetes operator for MLModelDeployment resources."""

__version__ = "0.1.0"
