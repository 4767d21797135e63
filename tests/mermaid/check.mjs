// Parse Mermaid files with Mermaid's own parser (the one GitHub and GitLab run), in
// Node with jsdom standing in for the browser. Prints "ok FILE TYPE" or "FAIL FILE:
// message" per file; exits 1 if any failed. Used by tests/test_diagram_mermaid.py.
import fs from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
globalThis.Element = dom.window.Element;

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

let failed = 0;
for (const file of process.argv.slice(2)) {
  try {
    const result = await mermaid.parse(fs.readFileSync(file, "utf8"));
    console.log(`ok ${file} ${result.diagramType}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${file}: ${String(error.message || error).split("\n").join(" | ")}`);
  }
}
process.exit(failed ? 1 : 0);
