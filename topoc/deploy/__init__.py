"""Deploy: plan, apply, status and destroy a lab on a libvirt connection.

engine (plan/apply/status/destroy, the only place libvirt is imported, lazily), records
(ownership), facts (what a plan compares, read from libvirt XML), report (how results read).
"""
