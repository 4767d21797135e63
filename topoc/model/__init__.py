"""The model: the typed IR and what follows from it alone.

ir (the one contract between stages), naming (derived names, MACs, UUIDs), topology
(L2 segments, wiring, routes), reach (who gets a reply from whom, and why), analysis
(one lab's facts, each computed once, handed to every later stage). Pure functions of
the IR; no I/O, no state kept between labs.
"""
