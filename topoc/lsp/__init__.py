"""`topoc lsp`: the language server for .topo files (diagnostics, navigation, hover,
completion, formatting, rename).

Only topoc.lsp.server knows pygls; the other modules are pure functions of one
document's text and its compilation (topoc.lsp.analysis), so they are tested without a
client. Nothing here imports pygls at import time of `topoc`: the CLI imports the
server only for `topoc lsp`.
"""
