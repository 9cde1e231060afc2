"""The checkpoint/restore tests' fixtures are tests/conftest.py's (`cove`: a state root
with busybox and a runner that checks nothing outlives a test; `env`)."""
