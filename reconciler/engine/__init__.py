"""The engine: one reconcile run, below any command line (DESIGN.md, "How a reconcile flows").

  reconcile.py  Engine: recover → observe → plan → execute, the run `apply` and `watch` share
  applier.py    Applier: a plan's calls and the journal (intent before, outcome after), recovery
  results.py    what a run did, session by session

Nothing here knows argparse, exit codes, stdin or rich; the engine imports no concrete
provider (import-linter checks both).
"""
