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
  document.addEventListener("DOMContentLoaded", function () {
    var main = document.querySelector('script[type="module"]');
    if (main) main.addEventListener("error", function () { failed("a file did not load"); });
    setTimeout(function () {
      if (document.querySelector(".shell, .signin")) sessionStorage.removeItem(KEY);
      else failed("it took more than 20 s");
    }, 20000);
  });
})();
