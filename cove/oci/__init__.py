"""oci layer of Cove: the OCI runtime and image specs as data, and their defaults.

OCI_VERSION lives here, in the package's __init__ that every importer of cove.oci loads
anyway, so that the runtime's state path pays no extra module for it.
"""

# The runtime-spec version Cove implements (state.json, features, the default spec).
OCI_VERSION = "1.2.0"
