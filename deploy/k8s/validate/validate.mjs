// Validate every manifest in deploy/k8s against its schema, with kubernetes-models' validators
// (the Kubernetes API, KEDA and the Prometheus Operator CRDs). Prints one line per object; exit 1
// on the first invalid one.   cd deploy/k8s/validate && npm ci && node validate.mjs
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const kinds = {
  "v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "ConfigMap"],
  "v1/Service": ["kubernetes-models/v1/Service", "Service"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment", "Deployment"],
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", "ScaledObject"],
  "monitoring.coreos.com/v1/PodMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor", "PodMonitor"],
};
let checked = 0;
for (const file of readdirSync(root).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort()) {
  for (const doc of parseAllDocuments(readFileSync(join(root, file), "utf8"))) {
    const obj = doc.toJS();
    const key = `${obj.apiVersion}/${obj.kind}`;
    if (!(key in kinds)) {
      console.error(`${file}: no schema for ${key}`);
      process.exit(1);
    }
    const [module, name] = kinds[key];
    const Model = (await import(module))[name];
    try {
      new Model(obj).validate();
    } catch (err) {
      console.error(`${file}: ${key} ${obj.metadata?.name}: INVALID\n${err.message ?? err}`);
      process.exit(1);
    }
    console.log(`${file}: ${key} ${obj.metadata.name}: valid`);
    checked += 1;
  }
}
console.log(`${checked} objects valid`);
