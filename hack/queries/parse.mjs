// Parses LogQL and TraceQL with Grafana's own grammars, the ones its query editors use.
// Input (stdin): a JSON array of {"language": "logql" | "traceql", "query": "..."}.
// Output (stdout): a JSON array, one entry per input: {"ok": true} or {"ok": false, "error": "..."}
// naming the offset and the text where the grammar found no valid parse.
import { readFileSync } from "node:fs";
import { parser as logql } from "@grafana/lezer-logql";
import { parser as traceql } from "@grafana/lezer-traceql";

const parsers = { logql, traceql };

function check({ language, query }) {
  const parser = parsers[language];
  if (!parser) return { ok: false, error: `unknown language ${JSON.stringify(language)}` };
  if (!query.trim()) return { ok: false, error: "empty query" };
  const errors = [];
  parser.parse(query).iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push(`at ${node.from}: ${JSON.stringify(query.slice(node.from, node.from + 20))}`);
      }
    },
  });
  return errors.length ? { ok: false, error: `syntax error ${errors.join("; ")}` } : { ok: true };
}

const input = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(input.map(check)) + "\n");
