"""The language server's wiring: pygls over stdio, one TopocServer per process holding
the open documents' latest analyses, each LSP request answered by topoc.lsp.features or
topoc.lsp.completion.

Diagnostics: on open at once; on change debounced on both edges: the first change after
a quiet spell (DEBOUNCE_SECONDS without one) is compiled at once, and the changes of a
burst that follows are compiled once, DEBOUNCE_SECONDS after the last of them. So a
single edit gets its diagnostics in the time of one compilation, and fast typing does
not queue one compilation per keystroke. Every analysis is cached by
document version: a request for a version already analysed costs nothing, and one that
comes before the debounce fires analyses the current text right away (and publishes it).
Compilation runs on the event loop, one at a time: the parser is not reentrant.

Memory and the cyclic GC: a 1,000-VM lab is a few hundred thousand objects, and a new
one each edit. Left alone, CPython's collector would rescan them all after nearly every
edit (a full collection: 150-500 ms, more than the compilation). The analyses make no
reference cycles (their garbage is freed by reference counting as soon as the next
version replaces them), so after each analysis the live objects are frozen out of the
collector's sight (gc.freeze), having first collected the rest; once the documents have
been quiet for IDLE_GC_SECONDS they are unfrozen and collected once, so nothing cyclic
that was alive at a freeze accumulates.

It never dies of an input: any exception inside a handler becomes a window/logMessage
with its traceback, and the request gets an empty answer.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from topoc import __version__
from topoc.front.fmt import FormatError
from topoc.lsp import features
from topoc.lsp.analysis import UTF8, UTF16, UTF32, Analysis, analyse
from topoc.lsp.completion import completions

DEBOUNCE_SECONDS = 0.05
IDLE_GC_SECONDS = 5.0

T = TypeVar("T")


class TopocServer(LanguageServer):
    """The server and its documents: uri -> latest analysis, uri -> pending compile."""

    def __init__(self) -> None:
        super().__init__("topoc", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.analyses: dict[str, Analysis] = {}
        self.pending: dict[str, asyncio.Handle] = {}
        self.last_change: dict[str, float] = {}  # uri -> loop time of its last change
        self.debounce = DEBOUNCE_SECONDS
        self.idle_gc: asyncio.TimerHandle | None = None

    # -- reporting --

    def log(self, message: str, kind: types.MessageType = types.MessageType.Log) -> None:
        try:
            self.window_log_message(types.LogMessageParams(kind, message))
        except Exception:  # the client went away: nothing left to tell
            logging.getLogger(__name__).exception("cannot send a log message")

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls's own errors (a message it cannot read, say) go to the log, not to a
        pop-up, and never stop the server."""
        self.log(f"topoc lsp: internal error ({getattr(source, '__name__', source)}): {error!r}",
                 types.MessageType.Error)

    # -- documents --

    def _encoding(self) -> str:
        try:
            chosen = self.workspace.position_encoding
        except Exception:  # before initialize: the protocol's default
            return UTF16
        value = str(getattr(chosen, "value", chosen) or UTF16)  # "utf-8", "utf-16" or "utf-32"
        return value if value in (UTF8, UTF16, UTF32) else UTF16

    def analysis(self, uri: str) -> Analysis | None:
        """The analysis of the document's current text (computed now if it is newer than
        the last one), or None for a document the client never opened."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return None
        cached = self.analyses.get(uri)
        if cached is not None and cached.version == doc.version and cached.source == doc.source.removeprefix("\ufeff"):
            return cached
        return self.refresh(uri)

    def refresh(self, uri: str) -> Analysis | None:
        """Analyse the document's current text, cache it and publish its diagnostics."""
        handle = self.pending.pop(uri, None)
        if handle is not None:
            handle.cancel()
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return None
        # First collect what is not frozen (the garbage of the messages since the last
        # analysis: cheap, the frozen objects are not looked at), so that no garbage gets
        # frozen. Then the collector stays off from the compilation until its objects are
        # frozen: re-enabled in between, its first young-generation pass would walk every
        # object the compilation made (80 ms and more at 1,000 VMs).
        gc.collect()
        gc.disable()
        try:
            previous = self.analyses.pop(uri, None)
            result = analyse(doc.source, doc.path or uri, doc.version, self._encoding(), previous)
            del previous  # only the latest version is kept: memory stays flat however long the session
            self.analyses[uri] = result
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=uri, version=doc.version, diagnostics=features.diagnostics(result)))
        finally:
            self._freeze_heap()
            gc.enable()
        return result

    def _freeze_heap(self) -> None:
        """Keep the collector off the analyses' objects until the documents go quiet."""
        gc.freeze()
        if self.idle_gc is not None:
            self.idle_gc.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the server's loop (tests): nothing to schedule
            return
        self.idle_gc = loop.call_later(IDLE_GC_SECONDS, self._collect)

    def _collect(self) -> None:
        self.idle_gc = None
        gc.unfreeze()
        gc.collect()

    def schedule(self, uri: str) -> None:
        """Analyse now if the document was quiet, else DEBOUNCE_SECONDS after the last
        change of the burst."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet = now - self.last_change.get(uri, float("-inf")) > self.debounce
        self.last_change[uri] = now
        handle = self.pending.pop(uri, None)
        if handle is not None:
            handle.cancel()
        if quiet and handle is None:
            # call_soon: after the messages already read, so a change that came with
            # this one is in the text compiled.
            self.pending[uri] = loop.call_soon(self._fire, uri)
        else:
            self.pending[uri] = loop.call_later(self.debounce, self._fire, uri)

    def _fire(self, uri: str) -> None:
        self.pending.pop(uri, None)
        try:
            self.refresh(uri)
        except Exception:
            self.log(f"topoc lsp: internal error analysing {uri}:\n{traceback.format_exc()}",
                     types.MessageType.Error)

    def close(self, uri: str) -> None:
        handle = self.pending.pop(uri, None)
        if handle is not None:
            handle.cancel()
        self.analyses.pop(uri, None)
        self.last_change.pop(uri, None)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


def _guarded(server: TopocServer, default: Callable[[], Any]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A handler that turns any exception into a log message and a default answer (a
    JSON-RPC error it raises on purpose, such as a refused rename, goes to the client)."""
    def decorate(handler: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(handler)
        def run(params: Any) -> T:
            try:
                return handler(params)
            except JsonRpcException:
                raise
            except Exception:
                server.log(f"topoc lsp: internal error in {handler.__name__}:\n{traceback.format_exc()}",
                           types.MessageType.Error)
                answer: T = default()
                return answer
        return run
    return decorate


def make_server() -> TopocServer:
    server = TopocServer()

    def none() -> None:
        return None

    def empty() -> list[Any]:
        return []

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @_guarded(server, none)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        server.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    @_guarded(server, none)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        server.schedule(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    @_guarded(server, none)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        server.analysis(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    @_guarded(server, none)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        server.close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    @_guarded(server, empty)
    def definition(params: types.DefinitionParams) -> list[types.Location]:
        a = server.analysis(params.text_document.uri)
        return features.definition(a, params.text_document.uri, params.position) if a else []

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    @_guarded(server, empty)
    def references(params: types.ReferenceParams) -> list[types.Location]:
        a = server.analysis(params.text_document.uri)
        return features.references(a, params.text_document.uri, params.position,
                                   params.context.include_declaration) if a else []

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_HIGHLIGHT)
    @_guarded(server, empty)
    def highlight(params: types.DocumentHighlightParams) -> list[types.DocumentHighlight]:
        a = server.analysis(params.text_document.uri)
        return features.highlights(a, params.position) if a else []

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @_guarded(server, none)
    def hover(params: types.HoverParams) -> types.Hover | None:
        a = server.analysis(params.text_document.uri)
        return features.hover(a, params.position) if a else None

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=[" ", ">"]))
    @_guarded(server, empty)
    def completion(params: types.CompletionParams) -> list[types.CompletionItem]:
        a = server.analysis(params.text_document.uri)
        return completions(a, params.position) if a else []

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    @_guarded(server, empty)
    def formatting(params: types.DocumentFormattingParams) -> list[types.TextEdit]:
        a = server.analysis(params.text_document.uri)
        if a is None:
            return []
        try:
            return features.formatting(a)
        except FormatError as e:
            server.log(str(e), types.MessageType.Error)
            return []

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @_guarded(server, empty)
    def symbols(params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
        a = server.analysis(params.text_document.uri)
        return features.document_symbols(a) if a else []

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    @_guarded(server, none)
    def prepare_rename(params: types.PrepareRenameParams) -> types.Range | None:
        a = server.analysis(params.text_document.uri)
        return features.prepare_rename(a, params.position) if a else None

    @server.feature(types.TEXT_DOCUMENT_RENAME)
    @_guarded(server, none)
    def rename(params: types.RenameParams) -> types.WorkspaceEdit | None:
        a = server.analysis(params.text_document.uri)
        if a is None:
            return None
        try:
            return features.rename(a, params.text_document.uri, params.position, params.new_name)
        except features.RenameRefused as e:
            # LSP's RequestFailed: the request was valid, the server cannot carry it out.
            raise JsonRpcException(str(e), code=types.LSPErrorCodes.RequestFailed.value) from None

    return server


def serve() -> None:
    """Run one server over stdin/stdout until the client says exit."""
    logging.basicConfig(level=logging.WARNING, format="topoc lsp: %(name)s: %(message)s")
    make_server().start_io()
