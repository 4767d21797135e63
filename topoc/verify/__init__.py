"""Verify: prove reach's prediction on a real kernel.

netns (the lab built in Linux network namespaces with the generated host scripts).
"""
