"""How fast `topoc lsp` answers an edit, and whether its memory stays flat.

It starts `topoc lsp` as an editor would (a subprocess over stdio, driven by pygls's
client), opens a generated lab (bench/gen.py, 1,000 VMs by default), warms the server
up, then:

- latency: `--trials` times, one character changes (a VM's `vcpus 1` becomes `2`, then
  back) and the clock runs until the diagnostics of that very version arrive; the
  median, 90th percentile and worst are printed next to the target (300 ms);
- CPU: the server's own CPU time (utime + stime from /proc) per edit over the trials,
  which is what the latency would be on an otherwise idle core (on a busy machine the
  wall time also counts the other processes' turns);
- memory: the server's resident set (VmRSS from /proc) before and after `--edits`
  further edits, each waited for (so each one is compiled, not merged by the debounce),
  then after a pause long enough for the server's idle collection and a quarter as many
  edits again.

    .venv/bin/python bench/lsp_bench.py [--vms 1000] [--trials 30] [--edits 1000]

It reports, it never asserts. Responsibility: measuring the language server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from gen import generate_lab  # noqa: E402  (bench/ is not a package)

from topoc.lsp.server import IDLE_GC_SECONDS  # noqa: E402

TARGET_MS = 300.0


def _cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Session:
    """A client with one open document; `edit` changes one character and waits for
    that version's diagnostics."""

    def __init__(self, client: LanguageClient, uri: str, text: str) -> None:
        self.client = client
        self.uri = uri
        self.version = 1
        self.published: dict[int, asyncio.Event] = {}
        self.counts: dict[int, int] = {}
        lines = text.split("\n")
        self.line = next(i for i, line in enumerate(lines) if line.strip() == "vcpus 1")
        self.column = lines[self.line].index("1")
        self.digit = "1"

        @client.feature(types.WINDOW_LOG_MESSAGE)
        def logged(params: types.LogMessageParams) -> None:
            print(f"server log: {params.message}", file=sys.stderr, flush=True)

        @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def published(params: types.PublishDiagnosticsParams) -> None:
            if params.uri == self.uri and params.version is not None:
                self.counts[params.version] = len(params.diagnostics)
                event = self.published.get(params.version)
                if event is not None:
                    event.set()

    async def edit(self) -> float:
        """One one-character change; seconds until its diagnostics arrive."""
        self.version += 1
        self.digit = "2" if self.digit == "1" else "1"
        event = self.published[self.version] = asyncio.Event()
        start = time.perf_counter()
        here = types.Range(types.Position(self.line, self.column), types.Position(self.line, self.column + 1))
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            [types.TextDocumentContentChangePartial(range=here, text=self.digit)]))
        await asyncio.wait_for(event.wait(), timeout=60)
        elapsed = time.perf_counter() - start
        del self.published[self.version]
        return elapsed


async def run(vms: int, trials: int, edits: int) -> None:
    text = generate_lab(vms)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.topo"
        path.write_text(text, encoding="utf-8")
        uri = path.as_uri()
        client = LanguageClient("lsp-bench", "1")
        await client.start_io(sys.executable, "-m", "topoc", "lsp")
        server = client._server
        assert server is not None
        await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities()))
        client.initialized(types.InitializedParams())
        session = Session(client, uri, text)
        opened = session.published[1] = asyncio.Event()
        start = time.perf_counter()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="topo", version=1, text=text)))
        await asyncio.wait_for(opened.wait(), timeout=120)
        print(f"lab: {vms:,} VMs, {len(text.splitlines()):,} lines; first diagnostics after open: "
              f"{(time.perf_counter() - start) * 1000:.0f} ms ({session.counts[1]} diagnostics)", flush=True)
        for _ in range(5):  # warm up
            await session.edit()
        cpu_before = _cpu_seconds(server.pid)
        samples = sorted([await session.edit() for _ in range(trials)])
        cpu_ms = (_cpu_seconds(server.pid) - cpu_before) * 1000 / max(trials, 1)
        ms = [s * 1000 for s in samples]
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        verdict = "within" if statistics.median(ms) <= TARGET_MS else "OVER"
        print(f"diagnostics after a one-character change, {trials} trials: median {statistics.median(ms):.0f} ms, "
              f"p90 {p90:.0f} ms, worst {ms[-1]:.0f} ms, best {ms[0]:.0f} ms "
              f"(target {TARGET_MS:.0f} ms: {verdict})", flush=True)
        print(f"server CPU time per edit: {cpu_ms:.0f} ms; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs", flush=True)
        before = _rss_kib(server.pid)
        start = time.perf_counter()
        for i in range(edits):
            await session.edit()
            if edits >= 10 and (i + 1) % (edits // 4) == 0:
                print(f"  after {i + 1:>5} edits: RSS {_rss_kib(server.pid) / 1024:.1f} MiB", flush=True)
        after = _rss_kib(server.pid)
        print(f"server RSS before {edits:,} edits: {before / 1024:.1f} MiB, after: {after / 1024:.1f} MiB "
              f"({(after - before) / 1024:+.1f} MiB; {time.perf_counter() - start:.0f} s)", flush=True)
        # The server collects what it froze once the documents are quiet for a while
        # (topoc.lsp.server.IDLE_GC_SECONDS): after a pause, further edits reuse memory.
        await asyncio.sleep(IDLE_GC_SECONDS + 2)
        idle = _rss_kib(server.pid)
        for _ in range(edits // 4):
            await session.edit()
        again = _rss_kib(server.pid)
        print(f"after a {IDLE_GC_SECONDS + 2:.0f} s pause: RSS {idle / 1024:.1f} MiB; after {edits // 4:,} more "
              f"edits: {again / 1024:.1f} MiB ({(again - before) / 1024:+.1f} MiB since the first)", flush=True)
        await client.shutdown_async(None)
        client.exit(None)
        await asyncio.wait_for(server.wait(), timeout=30)
        await client.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--edits", type=int, default=1000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.vms, args.trials, args.edits))


if __name__ == "__main__":
    main()
