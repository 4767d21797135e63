"""The front end: source text -> syntax tree -> typed IR, with diagnostics.

span (positions), syntax (the concrete tree), parser (lark, the only module that knows it),
lower (tree -> IR, every value checked), fmt (tree -> canonical text). Nothing here
knows libvirt, the host or the network model beyond the IR's types.
"""
