"""The front end: source text -> syntax tree -> typed IR, with diagnostics.

span (positions), syntax (the concrete tree), parser (lark, the only module that knows it),
statements (the table of statement shapes), values (one parser per kind of value), lower
(tree -> IR: one function per statement, then name resolution), fmt (tree -> canonical
text). Nothing here
knows libvirt, the host or the network model beyond the IR's types.
"""
