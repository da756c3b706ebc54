// Vite builds the demo into dist/ (served by `tidewire-relay --static-dir www/dist`), and
// `npm run dev` serves it with hot reload, proxying the relay's API and WebSocket to
// TIDEWIRE_URL (default http://127.0.0.1:7300, where scripts/demo starts the relay).
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const relay = process.env.TIDEWIRE_URL ?? "http://127.0.0.1:7300";

export default defineConfig({
  // `tidewire` is a link to ../client-wasm/pkg: its React bindings must use this site's React.
  resolve: { dedupe: ["react", "react-dom"] },
  // The React page (react.html) is JSX compiled by Vite's esbuild: no plugin needed.
  esbuild: { jsx: "automatic" },
  build: {
    // Two pages: the demo (index.html) and the same board written with tidewire/react.
    rollupOptions: {
      input: {
        main: fileURLToPath(new URL("index.html", import.meta.url)),
        react: fileURLToPath(new URL("react.html", import.meta.url)),
      },
    },
    // The package initialises its wasm with top-level await: every target that has ES
    // modules and WebAssembly has it too (Chrome 89, Firefox 89, Safari 15).
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
  },
  // The package finds its .wasm next to itself with `new URL(..., import.meta.url)`; Vite's
  // dev pre-bundling would move the JS away from it, so it is served as is.
  optimizeDeps: { exclude: ["tidewire"] },
  server: {
    // `tidewire` is a link to ../client-wasm/pkg (a `file:` dependency): let the dev server
    // read it, as it would any package under node_modules.
    fs: { allow: [".", fileURLToPath(new URL("../client-wasm/pkg", import.meta.url))] },
    proxy: {
      "/v1": { target: relay, ws: true },
      "/readyz": relay,
    },
  },
});
