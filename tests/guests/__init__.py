"""Test guests built from Debian packages (see tiny.py, debian.py)."""
