/* Sonae service worker: shows alert notifications (Web Push) and opens the guidance page on a tap.
 * It fetches nothing and caches nothing. */
"use strict";
self.addEventListener("push", (event) => {
  let m = {};
  try { m = event.data ? event.data.json() : {}; } catch (err) { m = { title: "Sonae", body: event.data ? event.data.text() : "" }; }
  event.waitUntil(self.registration.showNotification(m.title || "Sonae", {
    body: m.body || "", tag: m.tag || "sonae", renotify: true, lang: m.lang || "ja-JP",
    requireInteraction: (m.level || 0) >= 4, icon: "/static/icon.svg", data: { url: m.url || "/" },
  }));
});
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(self.clients.openWindow(url));
});
