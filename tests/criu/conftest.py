"""The engine tests' fixtures (a state root with busybox, a `cove` runner that checks
nothing outlives a test), for the engine's checkpoint/restore tests here."""

from tests.engine.conftest import busybox_blobs, cove

__all__ = ["busybox_blobs", "cove"]
