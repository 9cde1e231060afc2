"""Moved to cove.vm.initramfs (the vm handler writes its initramfs with it)."""

from cove.vm.initramfs import Cpio, build, module_order

__all__ = ["Cpio", "build", "module_order"]
