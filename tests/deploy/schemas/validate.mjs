// Validates Kubernetes objects of the custom resources the manifests use against the schemas of
// their CRDs, as the @kubernetes-models packages (vendored beside this file, see SOURCES.md)
// compile them: types, enums, required fields, patterns and bounds of each field.
//
//   node validate.mjs <node_modules directory> < objects.json
//
// Reads a JSON array of objects; prints a JSON array of {kind, name, error} for those that fail
// and of {kind, name, error: "no schema"} for a custom kind it has no schema for.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MODELS = {
  "gateway.networking.k8s.io/v1": ["@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1", ["Gateway", "GRPCRoute", "HTTPRoute"]],
  "monitoring.coreos.com/v1": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", ["PodMonitor", "ServiceMonitor", "PrometheusRule"]],
};

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
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
}
process.stdout.write(JSON.stringify(results));
