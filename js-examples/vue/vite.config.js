import { defineConfig } from "vite";
import vue from "@vitejs/plugin-vue";

export default defineConfig({
  plugins: [vue()],
  // `steadfast` is linked from ../../pkg: resolve Vue (and the package's
  // own `import "steadfast"`) from this app, so there is one copy of each.
  resolve: { dedupe: ["vue", "steadfast"] },
  // The dev server may serve ../shared (what the React and Vue examples
  // have in common) and the linked package with its wasm.
  server: { fs: { allow: ["..", "../../pkg"] } },
  base: "./",
});
