// Small shared pieces of the console: the html tag, polling and streaming hooks, paged tables, bars,
// badges and the confirmation dialog. The DOM work is Preact's (vendor/); nothing here diffs a DOM.
import { h } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);

// Calls `load` now and every `ms` while mounted (never two at once, and not while the tab is hidden:
// a forgotten background tab must not eat the token's rate limit); returns {data, error, reload}.
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const busy = useRef(false);
  const alive = useRef(true);
  const run = useCallback(async () => {
    if (busy.current) return;
    busy.current = true;
    try {
      const data = await load();
      if (alive.current) setState({ data, error: null });
    } catch (error) {
      if (alive.current) setState((s) => ({ data: s.data, error }));
    } finally {
      busy.current = false;
    }
  }, deps);
  useEffect(() => {
    alive.current = true;
    setState({ data: null, error: null });
    run();
    const timer = setInterval(() => { if (!document.hidden) run(); }, ms);
    const onShow = () => { if (!document.hidden) run(); };
    document.addEventListener("visibilitychange", onShow);
    return () => {
      alive.current = false;
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onShow);
    };
  }, [run, ms]);
  return { ...state, reload: run };
}

// Keeps a WebSocket open while mounted and `enabled`, reopening it (on whichever master the cluster
// now talks to) after it closes. `open()` returns the socket; `onMessage(data)` gets each message.
export function useSocket(open, onMessage, enabled = true, deps = []) {
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    if (!enabled) return undefined;
    let ws = null;
    let timer = null;
    let stopped = false;
    let attempt = 0;
    const connect = () => {
      if (stopped) return;
      ws = open(attempt);
      ws.onopen = () => {
        attempt += 1;
        setConnected(true);
      };
      ws.onmessage = (ev) => onMessage(ev.data);
      ws.onclose = () => {
        setConnected(false);
        if (!stopped) timer = setTimeout(connect, 1500);
      };
    };
    connect();
    return () => {
      stopped = true;
      clearTimeout(timer);
      if (ws) ws.close();
    };
  }, [enabled, ...deps]);
  return connected;
}

export function ago(iso) {
  if (!iso) return "–";
  const t = typeof iso === "number" ? iso * 1000 : Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

const TONES = {
  running: "ok", healthy: "ok", ready: "ok", leader: "lead", follower: "muted", eligible: "ok", done: "ok",
  degraded: "warn", pending: "warn", starting: "warn", rolling: "info", draining: "warn", canary: "info",
  unhealthy: "bad", down: "bad", stopped: "muted", failed: "bad", halted: "bad", unreachable: "bad",
  ineligible: "muted", lost: "bad",
};

export function Badge({ text, tone }) {
  const t = tone || TONES[String(text).split(" ")[0]] || "muted";
  return html`<span class="badge ${t}">${text}</span>`;
}

// A horizontal bar of used/total, green to red as it fills.
export function Bar({ used, total, label, testid }) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const tone = pct >= 90 ? "bad" : pct >= 70 ? "warn" : "ok";
  return html`<div class="bar" title=${label} data-testid=${testid}>
    <div class="bar-track"><div class="bar-fill ${tone}" style=${{ width: `${pct}%` }}></div></div>
    <span class="bar-text">${label}</span>
  </div>`;
}

// A table over any number of rows: filtered by a text box, sorted by a column, shown a page at a time,
// so 1,000 services cost the DOM the same as 25.
export function PagedTable({ rows, columns, pageSize = 25, filterKeys, placeholder, testid, empty, extra }) {
  const [page, setPage] = useState(0);
  const [query, setQuery] = useState("");
  const [sort, setSort] = useState({ key: columns[0].key, dir: 1 });
  const filtered = useMemo(() => {
    const q = query.trim().toLowerCase();
    const hit = q ? rows.filter((r) => filterKeys.some((k) => String(r[k] ?? "").toLowerCase().includes(q))) : rows;
    const col = columns.find((c) => c.key === sort.key);
    const val = col && col.sortValue ? col.sortValue : (r) => r[sort.key];
    return [...hit].sort((a, b) => {
      const x = val(a);
      const y = val(b);
      return (x > y ? 1 : x < y ? -1 : 0) * sort.dir;
    });
  }, [rows, query, sort]);
  const pages = Math.max(1, Math.ceil(filtered.length / pageSize));
  const current = Math.min(page, pages - 1);
  const shown = filtered.slice(current * pageSize, (current + 1) * pageSize);
  const by = (key) => setSort((s) => ({ key, dir: s.key === key ? -s.dir : 1 }));
  return html`<div class="table-wrap" data-testid=${testid}>
    <div class="table-tools">
      <input type="search" placeholder=${placeholder || "Filter"} value=${query}
        onInput=${(e) => { setQuery(e.target.value); setPage(0); }} aria-label="filter" />
      ${extra}
      <span class="count">${filtered.length === rows.length ? `${rows.length}` : `${filtered.length} of ${rows.length}`}</span>
    </div>
    <table>
      <thead><tr>${columns.map((c) => html`<th class=${c.cls || ""} onClick=${() => by(c.key)}>
        ${c.title}${sort.key === c.key ? (sort.dir > 0 ? " ▲" : " ▼") : ""}</th>`)}</tr></thead>
      <tbody>
        ${shown.length === 0 ? html`<tr><td class="empty" colspan=${columns.length}>${empty || "Nothing here yet."}</td></tr>` : null}
        ${shown.map((r) => html`<tr key=${r[columns[0].key]}>${columns.map((c) => html`<td class=${c.cls || ""}>${c.render ? c.render(r) : r[c.key] ?? "–"}</td>`)}</tr>`)}
      </tbody>
    </table>
    ${pages > 1 ? html`<div class="pager">
      <button onClick=${() => setPage(0)} disabled=${current === 0}>«</button>
      <button onClick=${() => setPage(current - 1)} disabled=${current === 0}>‹</button>
      <span>page ${current + 1} of ${pages}</span>
      <button onClick=${() => setPage(current + 1)} disabled=${current >= pages - 1}>›</button>
      <button onClick=${() => setPage(pages - 1)} disabled=${current >= pages - 1}>»</button>
    </div>` : null}
  </div>`;
}

// An action button; with `confirm`, a modal <dialog> asks first (destructive actions).
export function Action({ label, confirm, run, tone, testid, disabled }) {
  const dialog = useRef(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const go = async () => {
    setBusy(true);
    setError(null);
    try {
      await run();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  const click = () => (confirm ? dialog.current.showModal() : go());
  return html`<span class="action">
    <button class="btn ${tone || ""}" data-action=${testid} data-testid=${testid} disabled=${busy || disabled}
      onClick=${click}>${busy ? "…" : label}</button>
    ${error ? html`<span class="action-error" role="alert">${error}</span>` : null}
    ${confirm ? html`<dialog ref=${dialog} class="confirm" data-testid=${`${testid}-dialog`}>
      <h3>${label}?</h3><p>${confirm}</p>
      <div class="dialog-buttons">
        <button class="btn" onClick=${() => dialog.current.close()}>Cancel</button>
        <button class="btn ${tone || "primary"}" data-testid=${`${testid}-confirm`}
          onClick=${() => { dialog.current.close(); go(); }}>${label}</button>
      </div>
    </dialog>` : null}
  </span>`;
}

export function Card({ title, children, right, cls, testid }) {
  return html`<section class="card ${cls || ""}" data-testid=${testid}>
    ${title ? html`<header class="card-head"><h2>${title}</h2><div>${right}</div></header>` : null}
    ${children}
  </section>`;
}

export function ErrorLine({ error }) {
  return error ? html`<p class="error-line">${error.message}</p>` : null;
}
