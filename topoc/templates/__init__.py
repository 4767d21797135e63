"""Jinja2 templates of the backends, one folder per backend."""
