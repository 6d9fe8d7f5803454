"""Device catalog: public hardware facts of iPhones, iPads and Macs."""

from snapbench.devices.catalog import Device, list_devices, resolve_device

__all__ = ["Device", "list_devices", "resolve_device"]
