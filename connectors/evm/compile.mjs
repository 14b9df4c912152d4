// Compile a solc standard-JSON input read from stdin with solc-js and print the output JSON.
// Imports such as "@openzeppelin/contracts/..." resolve under this folder's node_modules.
// Run by connectors/evm/build.py; see docs/onchain.md.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const solc = require("solc");
const roots = [join(here, "node_modules"), join(here, "contracts")];

function findImports(path) {
  for (const root of roots) {
    const full = resolve(root, path);
    if (!full.startsWith(root)) continue;
    try {
      return { contents: readFileSync(full, "utf8") };
    } catch {}
  }
  return { error: `import not found: ${path} (looked under ${roots.join(", ")})` };
}

const input = readFileSync(0, "utf8");
process.stdout.write(JSON.stringify({ version: solc.version(), output: JSON.parse(solc.compile(input, { import: findImports })) }));
