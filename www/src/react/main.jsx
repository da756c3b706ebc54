// The demo board in React: the idiomatic way to use tidewire in a React app. One client for
// the page, handed to the hooks by <TidewireProvider>; the same stream as the main demo page,
// so both pages (and psql) edit one board.
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { TidewireClient } from "tidewire";
import { TidewireProvider } from "tidewire/react";

import "../style.css";
import { App } from "./App.jsx";

const client = new TidewireClient(location.origin);
window.tidewireReact = { client };

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <TidewireProvider client={client}>
      <App />
    </TidewireProvider>
  </StrictMode>,
);
