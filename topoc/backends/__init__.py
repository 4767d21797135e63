"""Backends: pure functions from the IR to artifacts {relative path: text}."""
