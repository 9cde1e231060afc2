"""docker-py's client model over the engine, in-process (cove/engine/client.py is its
door, `cove.Client` and `cove.from_env()`): a module per kind of object, each with its
collection (`client.containers`, `.images`, `.volumes`, `.networks`), and common.py's
errors, state root and filters below them all."""
