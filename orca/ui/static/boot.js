// A classic script, run before the modules: if the console's modules fail to load (a master that
// died or dropped a connection mid-load), reload once; if that fails too, say so instead of "Loading…".
(function () {
  var KEY = "orca.console.reloaded";
  function failed(why) {
    if (document.querySelector(".shell, .signin")) return;
    if (!sessionStorage.getItem(KEY)) {
      sessionStorage.setItem(KEY, "1");
      location.reload();
      return;
    }
    var app = document.getElementById("app");
    if (app) app.innerHTML = '<p class="boot">The console did not start (' + why + "). Reload the page, or open it from another master.</p>";
  }
  // Start the overview's two big reads now, while the modules load (they are the first paint's
  // critical path); the overview takes these answers once, then polls through its usual client.
  try {
    var m = location.hash.match(/^#token=([^&]+)/);
    var token = m ? decodeURIComponent(m[1]) : sessionStorage.getItem("orca.console.token");
    if (token && /^(#\/?)?$|^#token=/.test(location.hash)) {
      window.__orcaPrefetch = {};
      ["/api/v1/status", "/api/v1/cluster/nodes"].forEach(function (path) {
        window.__orcaPrefetch[path] = fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" })
          .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); });
        window.__orcaPrefetch[path].catch(function () {}); // unhandled until the overview asks
      });
    }
  } catch (e) { /* the overview reads as usual */ }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.querySelector('script[type="module"]');
    if (main) main.addEventListener("error", function () { failed("a file did not load"); });
    setTimeout(function () {
      if (document.querySelector(".shell, .signin")) sessionStorage.removeItem(KEY);
      else failed("it took more than 20 s");
    }, 20000);
  });
})();
