// Spotlight's sidecar and UI for `make run` (docs/tracing.md), started without its CLI:
// the CLI reports its own traces and errors to sentry.io, and a local viewer should not.
// SPOTLIGHT_PORT (default 8969): the UI at http://127.0.0.1:<port>/, envelopes at /stream.
// SPOTLIGHT_HOST (default 127.0.0.1; 0.0.0.0 in a container): it shows traces and errors, so
// it stays off the network unless asked. setupSpotlight has no host option: its server's
// listen(port, undefined) gets one here.
import { readFileSync } from "node:fs";
import net from "node:net";
import { setupSpotlight } from "@spotlightjs/spotlight";

const host = process.env.SPOTLIGHT_HOST || "127.0.0.1";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, hostname, ...rest) {
  return listen.call(this, port, typeof port === "number" && hostname === undefined ? host : hostname, ...rest);
};

const ui = new URL("./node_modules/@spotlightjs/spotlight/dist/ui/", import.meta.url);
const read = (name) => readFileSync(new URL(name, ui));
const filesToServe = { "index.html": read("index.html") };
for (const entry of Object.values(JSON.parse(read("manifest.json")))) {
  if (entry && typeof entry.file === "string") filesToServe[entry.file] = read(entry.file);
}
const port = Number(process.env.SPOTLIGHT_PORT || 8969);
await setupSpotlight({ port, basePath: process.cwd(), filesToServe, isStandalone: true });
console.log(`spotlight: http://${host}:${port}/`);
