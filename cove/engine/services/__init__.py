"""Services: a Compose project kept at its desired shape by the engine.

- `compose.py` reads, interpolates and validates a Compose file into a plain model
  (every error one line naming the key path; `composekeys.py` checks the keys);
- `state.py` keeps each project's desired state under `<root>/projects/<project>/`
  (written atomically, under a per-project flock);
- `reconcile.py` makes the running replicas match it, one idempotent pass at a time:
  dependency order, replacement of dead or unhealthy replicas, scaling, health-gated
  rolling updates and automatic rollback (`plan.py` decides, `actions.py` acts on
  replicas). The root's monitor runs it (in a child it forks) on events — a project's
  container exits or changes health, the CLI changed the desired state, the monitor
  starts — and when the last pass asked (a delay, a deadline, an autoscaling sample);
  the CLI runs it too, to wait for what it asked; `replica.py` reads the replicas and
  says how a new one is made, `announce.py` has a new one announce its addresses
  (gratuitous ARP);
- `project.py` takes a project (or services that left its file) away;
- `lb.py`, `names.py`, `autoscale.py` (the services networking work) spread a
  published port over the healthy replicas, resolve a service's name to them, and
  follow CPU load.

Nothing here is imported by the monitor itself: only by the children it forks.
"""
