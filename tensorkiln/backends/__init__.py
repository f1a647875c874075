"""Backends: one folder per device, each with a registry of kernel factories."""
