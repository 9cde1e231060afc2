"""The vm handler: a microVM per container (handler.py), its keeper process (vmm.py),
the guest's initramfs and agent, and the control channel (ctl.py, proto.py)."""
