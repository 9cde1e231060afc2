"""Moved to cove.handlers.vm.initramfs (the vm handler writes its initramfs with it)."""

from cove.handlers.vm.initramfs import Cpio, build, module_order

__all__ = ["Cpio", "build", "module_order"]
