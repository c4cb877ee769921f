"""Rehearsals on a copy-on-write clone of an environment's cluster: the clone's lifecycle
(clone.py, run by scripts/rehearse.sh with the caller's credentials) and the IAM policy that
allows exactly that (policy.py, held by the GitHub deploy role)."""
