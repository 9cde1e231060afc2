"""Services: a Compose project kept at its desired shape by the engine.

- `compose.py` reads, interpolates and validates a Compose file into a plain model
  (every error one line naming the key path; `composekeys.py` checks the keys);
- `state.py` keeps each project's desired state under `<root>/projects/<project>/`
  (written atomically, under a per-project flock);
- `reconcile.py` makes the running replicas match it, one idempotent pass at a time:
  dependency order, replacement of dead or unhealthy replicas, scaling, health-gated
  rolling updates and automatic rollback. The root's monitor runs it (in a child it
  forks) when a project's container exits, on a timer while a project exists, and
  when it starts; the CLI runs it too, to wait for what it asked; `replica.py` reads
  the replicas and says how a new one is made, `announce.py` has a new one announce
  its address (gratuitous ARP);
- `project.py` takes a project (or services that left its file) away;
- `lb.py`, `names.py`, `autoscale.py` (the services networking work) spread a
  published port over the healthy replicas, resolve a service's name to them, and
  follow CPU load.

Nothing here is imported by the monitor itself: only by the children it forks.
"""
