"use strict";
// Keeps the gate page's own files, so a gate whose browser restarts while the api is
// unreachable still opens the page (its snapshot and kept scans are in localStorage).
// Network first: a reachable api always serves the current files.
const CACHE = "cardpipe-gate-v1";
const FILES = ["/gate", "/gate/assets/gate.css", "/gate/assets/rules.js", "/gate/assets/gate.js"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !FILES.includes(url.pathname)) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        return response;
      })
      .catch(() => caches.match(event.request, { ignoreSearch: true })),
  );
});
