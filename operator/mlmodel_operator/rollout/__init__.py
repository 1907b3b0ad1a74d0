"""Canary rollouts: the step state machine (machine.py), how a step's weight becomes replicas
and route weights (split.py), and between them and the reconcile, the facts it reads and the
objects it applies (plan.py); all pure. step.py runs one reconcile's step, querying the
step's analysis when it is due."""
