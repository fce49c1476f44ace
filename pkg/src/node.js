// Entry point for Node.js: the wasm is read from the package's files.
import { readFileSync } from "node:fs";
import { initSync } from "../wasm/steadfast.js";
import { _setLoader } from "./steadfast.js";

_setLoader(() =>
  initSync({ module: readFileSync(new URL("../wasm/steadfast_bg.wasm", import.meta.url)) }),
);

export * from "./steadfast.js";
