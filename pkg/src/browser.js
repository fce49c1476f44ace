// Entry point for browsers and bundlers (Vite, webpack): the wasm is
// fetched from next to the glue (`new URL(..., import.meta.url)`).
import init from "../wasm/steadfast.js";
import { _setLoader } from "./steadfast.js";

_setLoader(() => init());

export * from "./steadfast.js";
