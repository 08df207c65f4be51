// The console's shell: sign-in, the top bar, the failover banner and the routes (#/, #/services/X, #/nodes/Y).
import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { claimsOf, Cluster, forgetToken, saveToken, tokenFromPage } from "./api.js";
import { NodePage } from "./node.js";
import { Overview } from "./overview.js";
import { ServicePage } from "./service.js";
import { html } from "./ui.js";

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
  const [checked, setChecked] = useState(false);
  const cluster = useMemo(() => (token ? new Cluster(token) : null), [token]);
  const claims = useMemo(() => (token ? claimsOf(token) : null), [token]);
  const route = useRoute();
  useEffect(() => {
    if (!cluster) return;
    setChecked(false);
    cluster.get("/api/v1/cluster/info").then((info) => {
      cluster.learn(info);
      setChecked(true);
    }).catch((err) => {
      if (err.status === 401 || err.status === 403) {
        forgetToken();
        setError(`The cluster refused this token: ${err.message}`);
        setToken(null);
      } else {
        setChecked(true); // the cluster is unreachable for now; pages show it and keep retrying
      }
    });
  }, [cluster]);
  if (!token) {
    return html`<${SignIn} error=${error} onToken=${(t) => { saveToken(t); setError(null); setToken(t); }} />`;
  }
  const signOut = () => { forgetToken(); setToken(null); location.hash = "#/"; };
  let page = html`<p class="loading">Connecting…</p>`;
  if (checked) {
    if (route.page === "service") page = html`<${ServicePage} key=${route.name} cluster=${cluster} claims=${claims} name=${route.name} />`;
    else if (route.page === "node") page = html`<${NodePage} key=${route.id} cluster=${cluster} claims=${claims} id=${route.id} />`;
    else page = html`<${Overview} cluster=${cluster} claims=${claims} />`;
  }
  return html`<div class="shell">
    <${TopBar} cluster=${cluster} claims=${claims} onSignOut=${signOut} />
    <${Banner} cluster=${cluster} />
    <main>${page}</main>
  </div>`;
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading…" line of index.html
render(html`<${App} />`, root);
