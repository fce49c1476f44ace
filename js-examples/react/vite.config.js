import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  // `steadfast` is linked from ../../pkg: resolve React (and the package's
  // own `import "steadfast"`) from this app, so there is one copy of each.
  resolve: { dedupe: ["react", "react-dom", "steadfast"] },
  // The dev server may serve ../shared (what the React and Vue examples
  // have in common) and the linked package with its wasm.
  server: { fs: { allow: ["..", "../../pkg"] } },
  base: "./",
});
