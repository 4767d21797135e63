"""topoc: compile .topo lab topologies into libvirt XML, host scripts and diagrams."""

__version__ = "0.1.0"
