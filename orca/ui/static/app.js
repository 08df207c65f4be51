// The console's shell: sign-in, the top bar, the failover banner and the routes (#/, #/services/X, #/nodes/Y).
import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { claimsOf, Cluster, forgetToken, saveToken, tokenFromPage } from "./api.js";
import { Overview } from "./overview.js";
import { html } from "./ui.js";

// The service and node pages (and uPlot, 145 KB) load when first visited, not before the overview.
function lazy(load, name) {
  let loaded = null;
  return function Lazy(props) {
    const [, setReady] = useState(false);
    useEffect(() => {
      if (!loaded) load().then((m) => { loaded = m[name]; setReady(true); });
    }, []);
    return loaded ? html`<${loaded} ...${props} />` : html`<p class="loading">Loading…</p>`;
  };
}
const ServicePage = lazy(() => import("./service.js"), "ServicePage");
const NodePage = lazy(() => import("./node.js"), "NodePage");

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "services" && parts[1]) return { page: "service", name: parts[1] };
  if (parts[0] === "nodes" && parts[1]) return { page: "node", id: parts[1] };
  return { page: "overview" };
}

function SignIn({ onToken, error }) {
  const [value, setValue] = useState("");
  return html`<div class="signin">
    <form class="signin-card" data-testid="signin" onSubmit=${(e) => { e.preventDefault(); if (value.trim()) onToken(value.trim()); }}>
      <div class="brand big"><span class="logo">◆</span> orca</div>
      <p>Sign in with an API token. It is kept for this tab only and forgotten when the tab closes.</p>
      <label for="token">Token</label>
      <input id="token" type="password" autocomplete="off" value=${value} data-testid="token-input"
        placeholder="eyJhbGciOi…" onInput=${(e) => setValue(e.target.value)} />
      ${error ? html`<p class="error-line" data-testid="signin-error">${error}</p>` : null}
      <button class="btn primary" type="submit" data-testid="signin-button">Sign in</button>
      <p class="hint">No token? <code>orca token create --role viewer --name you</code>, or run <code>orca ui</code>, which opens this console signed in.</p>
    </form>
  </div>`;
}

function Banner({ cluster }) {
  const [, tick] = useState(0);
  useEffect(() => {
    const off = cluster.subscribe(() => tick((n) => n + 1));
    const timer = setInterval(() => tick((n) => n + 1), 5000);
    return () => { off(); clearInterval(timer); };
  }, [cluster]);
  const n = cluster.liveNotice();
  if (!n) return null;
  return html`<div class="banner ${n.level}" role="status" data-testid="banner">${n.text}
    <button class="banner-close" aria-label="dismiss" onClick=${() => { cluster.notice = null; tick((x) => x + 1); }}>×</button></div>`;
}

function TopBar({ cluster, claims, onSignOut }) {
  const [, tick] = useState(0);
  useEffect(() => cluster.subscribe(() => tick((n) => n + 1)), [cluster]);
  return html`<header class="topbar">
    <a class="brand" href="#/"><span class="logo">◆</span> orca</a>
    <nav><a href="#/">Overview</a></nav>
    <div class="spacer"></div>
    <span class="conn" data-testid="connected-to" title="the master this console reads from">via ${cluster.name(cluster.current)}${cluster.leaderId ? html` · leader <strong data-testid="leader">${cluster.leaderId}</strong>` : null}</span>
    <span class="who" data-testid="who">${claims?.sub || "?"} <span class="role ${claims?.role}">${claims?.role || "?"}</span></span>
    <button class="btn ghost" data-testid="signout" onClick=${onSignOut}>Sign out</button>
  </header>`;
}

function App() {
  const [token, setToken] = useState(() => tokenFromPage());
  const [error, setError] = useState(null);
  const cluster = useMemo(() => (token ? new Cluster(token) : null), [token]);
  const claims = useMemo(() => (token ? claimsOf(token) : null), [token]);
  const route = useRoute();
  // A #token= link opened in a tab that already shows the console is only a hash change: take it too.
  useEffect(() => {
    const on = () => {
      if (location.hash.startsWith("#token=")) {
        setError(null);
        setToken(tokenFromPage());
      }
    };
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  // The pages start at once (no round trip first); the first 401 from any request signs out.
  useEffect(() => {
    if (!cluster) return undefined;
    return cluster.onUnauthorized((message) => {
      forgetToken();
      setError(`The cluster refused this token: ${message}`);
      setToken(null);
    });
  }, [cluster]);
  // Learn every master's URL (and the leader) early and keep it fresh, whichever page is open: that
  // list is where the console turns when the master it talks to goes away.
  useEffect(() => {
    if (!cluster) return undefined;
    const learn = () => cluster.get("/api/v1/cluster/info").then((info) => cluster.learn(info)).catch(() => {});
    learn();
    const timer = setInterval(learn, 5000);
    return () => clearInterval(timer);
  }, [cluster]);
  if (!token) {
    return html`<${SignIn} error=${error} onToken=${(t) => { saveToken(t); setError(null); setToken(t); }} />`;
  }
  const signOut = () => { forgetToken(); setToken(null); location.hash = "#/"; };
  let page;
  if (route.page === "service") page = html`<${ServicePage} key=${route.name} cluster=${cluster} claims=${claims} name=${route.name} />`;
  else if (route.page === "node") page = html`<${NodePage} key=${route.id} cluster=${cluster} claims=${claims} id=${route.id} />`;
  else page = html`<${Overview} cluster=${cluster} claims=${claims} />`;
  return html`<div class="shell">
    <${TopBar} cluster=${cluster} claims=${claims} onSignOut=${signOut} />
    <${Banner} cluster=${cluster} />
    <main>${page}</main>
  </div>`;
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading…" line of index.html
render(html`<${App} />`, root);
