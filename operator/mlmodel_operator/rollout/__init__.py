"""Canary rollouts: the step state machine (machine.py) and how a step's weight becomes replicas
and route weights (split.py). Both pure; the reconcile feeds them and applies what they decide."""
