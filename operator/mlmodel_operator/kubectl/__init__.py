"""`kubectl mlmd`: a kubectl plugin to look at MLModelDeployments and act on their rollouts."""
