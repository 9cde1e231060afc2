"""Cove: an OCI runtime (`cove-runtime`) and a container platform (`cove`).

Kept empty on purpose: `cove-runtime` imports sub-packages on its hot path, and
anything imported here would cost every invocation start-up time.
"""

__version__ = "0.1.0"
