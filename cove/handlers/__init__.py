"""handlers layer of Cove: the isolation handlers other than the namespaces runtime.

`vm/` boots each container in its own microVM (qemu), `gvisor.py` hands it to runsc.
Both implement cove.runtime.handler.Handler; `cove-runtime` loads them only when a
config or a state names one, so the default path never imports this package.
"""
