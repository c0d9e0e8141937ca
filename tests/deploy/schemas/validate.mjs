// Validates Kubernetes objects of the custom resources the manifests use against the schemas of
// their CRDs, as the @kubernetes-models packages (vendored beside this file, see SOURCES.md)
// compile them: types, enums, required fields, patterns and bounds of each field. The compiled
// schemas let unknown fields through, so each object is also type-checked by the TypeScript
// compiler against the interface the same package declares for its kind: a field the CRD does not
// know (a misspelt one) is an excess property there, and refused.
//
//   node validate.mjs <node_modules directory> < objects.json
//
// Reads a JSON array of objects; prints a JSON array of {kind, name, error} for those that fail
// and of {kind, name, error: "no schema"} for a custom kind it has no schema for.
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const MODELS = {
  "gateway.networking.k8s.io/v1": ["@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1", ["Gateway", "GRPCRoute", "HTTPRoute"]],
  "monitoring.coreos.com/v1": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", ["PodMonitor", "ServiceMonitor", "PrometheusRule"]],
};

const modules = resolve(process.argv[2]);
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
const typed = []; // [index in results, module, kind]
for (const object of objects) {
  const name = object?.metadata?.name ?? "";
  const known = MODELS[object.apiVersion];
  if (!known || !known[1].includes(object.kind)) {
    results.push({ kind: object.kind, name, error: "no schema" });
    continue;
  }
  const module = await import(pathToFileURL(join(modules, known[0], `${object.kind}.js`)).href);
  try {
    new module[object.kind](object).validate();
    results.push({ kind: object.kind, name, error: null });
  } catch (error) {
    results.push({ kind: object.kind, name, error: String(error.message ?? error) });
  }
  typed.push([results.length - 1, known[0], object]);
}

// One declaration a line, so a diagnostic's line names its object.
const ts = (await import(pathToFileURL(join(modules, "typescript", "lib", "typescript.js")).href)).default;
const work = mkdtempSync(join(tmpdir(), "crd-fields-"));
try {
  symlinkSync(modules, join(work, "node_modules"), "dir");
  const lines = [...new Set(typed.map(([, path, object]) => `import type { I${object.kind} } from "${path}/${object.kind}";`))];
  const first = lines.length;
  for (const [, , object] of typed) {
    lines.push(`export const o${lines.length - first}: I${object.kind} = ${JSON.stringify(object)};`);
  }
  const file = join(work, "objects.ts");
  writeFileSync(file, lines.join("\n") + "\n");
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  });
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, " ");
    const line = diagnostic.file ? diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0).line : -1;
    const at = typed[line - first];
    if (!at) {
      // Not an object's own line: the check itself is broken (a kind without its interface...).
      throw new Error(`type check of the objects failed: ${message}`);
    }
    const result = results[at[0]];
    result.error = result.error ? `${result.error}; ${message}` : message;
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(results));
