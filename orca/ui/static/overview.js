// The overview: masters, nodes with their capacity, services with their replicas, and the live events.
import { useEffect, useRef, useState } from "preact/hooks";
import { ago, Badge, Bar, bytes, Card, ErrorLine, html, PagedTable, usePoll, useSocket } from "./ui.js";

const POLL_MS = 2000;

function Masters({ cluster, info }) {
  const health = usePoll(async () => {
    const out = {};
    await Promise.all((info?.masters || []).map(async (m) => {
      try {
        out[m.id] = await cluster.getPublic(m.api_url.replace(/\/$/, ""), "/api/v1/health");
      } catch {
        out[m.id] = null;
      }
    }));
    return out;
  }, POLL_MS, [info ? info.masters.map((m) => m.id).join() : ""]);
  const masters = info?.masters || [];
  return html`<div class="masters" data-testid="masters">
    ${masters.map((m) => {
      const hb = health.data ? health.data[m.id] : undefined;
      const up = hb !== null;
      const state = hb ? hb.state : m.state;
      return html`<div class="master ${hb === null ? "down" : ""}" data-testid=${`master-${m.id}`}>
        <div class="master-top"><strong>${m.id}</strong>
          <${Badge} text=${hb === null ? "unreachable" : state} tone=${hb === null ? "bad" : state === "leader" ? "lead" : "muted"} /></div>
        <div class="master-url">${m.api_url}</div>
        <dl>
          <dt>health</dt><dd>${hb ? html`<${Badge} text=${hb.status} tone=${hb.status === "healthy" ? "ok" : hb.status === "degraded" ? "warn" : "bad"} />` : up ? "…" : "–"}</dd>
          <dt>term</dt><dd>${hb ? hb.term : "–"}</dd>
          <dt>applied</dt><dd>${hb ? hb.applied_index : "–"}</dd>
          <dt>lag</dt><dd>${hb ? hb.lag : "–"}</dd>
          <dt>version</dt><dd>${hb ? hb.version : "–"}</dd>
        </dl>
      </div>`;
    })}
  </div>`;
}

function Stats({ services, nodes }) {
  const s = services || [];
  const n = nodes || [];
  const desired = s.reduce((a, x) => a + (x.status === "stopped" ? 0 : x.replicas), 0);
  const running = s.reduce((a, x) => a + x.running_replicas, 0);
  const healthy = s.reduce((a, x) => a + x.healthy_replicas, 0);
  const troubled = s.filter((x) => x.status === "degraded" || x.status === "pending").length;
  const ready = n.filter((x) => x.status === "ready").length;
  return html`<div class="stats">
    <div class="stat"><span class="stat-num" data-testid="stat-services">${s.length}</span><span class="stat-label">services</span></div>
    <div class="stat"><span class="stat-num">${running}/${desired}</span><span class="stat-label">replicas running</span></div>
    <div class="stat"><span class="stat-num">${healthy}</span><span class="stat-label">healthy</span></div>
    <div class="stat ${troubled ? "warn" : ""}"><span class="stat-num">${troubled}</span><span class="stat-label">need attention</span></div>
    <div class="stat"><span class="stat-num" data-testid="stat-nodes">${ready}/${n.length}</span><span class="stat-label">nodes ready</span></div>
  </div>`;
}

const serviceColumns = [
  { key: "name", title: "Service", render: (s) => html`<a href=${`#/services/${encodeURIComponent(s.name)}`} data-testid=${`svc-${s.name}`}>${s.name}</a>` },
  { key: "project", title: "Project" },
  { key: "status", title: "Status", render: (s) => html`<${Badge} text=${s.status} />` },
  { key: "running_replicas", title: "Running", cls: "num", sortValue: (s) => s.running_replicas - s.replicas,
    render: (s) => html`<span data-testid=${`replicas-${s.name}`}>${s.running_replicas}/${s.replicas}</span>` },
  { key: "healthy_replicas", title: "Healthy", cls: "num", render: (s) => html`<span data-testid=${`healthy-${s.name}`}>${s.healthy_replicas}</span>` },
  { key: "version", title: "Version", cls: "num", render: (s) => html`<span data-testid=${`version-${s.name}`}>v${s.version}</span>${s.canary_version ? html` <${Badge} text=${`canary v${s.canary_version}`} tone="info" />` : null}` },
  { key: "rollout", title: "Rollout", render: (s) => html`<span data-testid=${`rollout-${s.name}`}>${s.rollout ? html`<${Badge} text=${s.rollout} />` : "–"}</span>` },
  { key: "pending_reason", title: "Why not all running", cls: "reason", render: (s) => html`<span data-testid=${`reason-${s.name}`}>${s.pending_reason || ""}</span>` },
  { key: "image", title: "Image", cls: "mono dim" },
];

const nodeColumns = [
  { key: "id", title: "Node", render: (n) => html`<a href=${`#/nodes/${encodeURIComponent(n.id)}`} data-testid=${`node-${n.id}`}>${n.id}</a>` },
  { key: "status", title: "Status", render: (n) => html`<${Badge} text=${n.status} />` },
  { key: "eligibility", title: "Eligibility", render: (n) => html`<${Badge} text=${n.drain && !n.drain.complete ? "draining" : n.eligibility} />` },
  { key: "allocations", title: "Replicas", cls: "num" },
  { key: "mem", title: "Memory", sortValue: (n) => (n.allocated?.memory || 0) / (n.capacity?.memory || 1),
    render: (n) => html`<${Bar} used=${n.allocated?.memory || 0} total=${n.capacity?.memory || 0}
      label=${`${bytes(n.allocated?.memory || 0)} / ${bytes(n.capacity?.memory)}`} />` },
  { key: "cpu", title: "CPU", sortValue: (n) => (n.allocated?.cpu || 0) / (n.capacity?.cpu || 1),
    render: (n) => html`<${Bar} used=${n.allocated?.cpu || 0} total=${n.capacity?.cpu || 0}
      label=${`${(n.allocated?.cpu || 0).toFixed(2)} / ${n.capacity?.cpu ?? "–"} cores`} />` },
  { key: "last_heartbeat", title: "Last report", render: (n) => ago(n.last_heartbeat) },
];

export function eventText(e) {
  if (e.message) return e.message;
  const bits = Object.entries(e.details || {}).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return bits.join(" ");
}

export function EventFeed({ cluster, service, testid }) {
  const [events, setEvents] = useState([]);
  const last = useRef(null);
  const query = service ? `service=${encodeURIComponent(service)}` : "";
  useEffect(() => {
    let gone = false;
    cluster.get(`/api/v1/events?limit=50${query ? `&${query}` : ""}`).then((d) => {
      if (gone) return;
      const list = d.events || [];
      if (list.length) last.current = Math.max(...list.map((e) => e.seq));
      setEvents((cur) => mergeEvents(cur, list));
    }).catch(() => {});
    return () => { gone = true; };
  }, [service]);
  const live = useSocket(() => {
    const since = last.current !== null ? `since=${last.current}` : "";
    const qs = [query, since].filter(Boolean).join("&");
    return cluster.socket(`/api/v1/events/stream${qs ? `?${qs}` : ""}`);
  }, (data) => {
    const e = JSON.parse(data);
    last.current = Math.max(last.current ?? 0, e.seq);
    setEvents((cur) => mergeEvents(cur, [e]));
  }, true, [service]);
  return html`<${Card} title="Events" testid=${testid || "events"} cls="events-card"
    right=${html`<span class="live ${live ? "on" : ""}">${live ? "live" : "connecting…"}</span>`}>
    <ol class="events">
      ${events.length === 0 ? html`<li class="empty">No events yet.</li>` : null}
      ${events.map((e) => html`<li key=${e.seq} data-testid="event">
        <time title=${e.time}>${ago(e.time)}</time>
        <span class="ev-type">${e.type.replace(/_/g, " ")}</span>
        ${e.service && !service ? html`<a href=${`#/services/${encodeURIComponent(e.service)}`}>${e.service}</a>` : null}
        ${e.node ? html`<a href=${`#/nodes/${encodeURIComponent(e.node)}`} class="dim">${e.node}</a>` : null}
        <span class="ev-detail">${eventText(e)}${e.actor ? html` <span class="dim">by ${e.actor}</span>` : null}</span>
      </li>`)}
    </ol>
  </${Card}>`;
}

function mergeEvents(cur, add) {
  const seen = new Set(cur.map((e) => e.seq));
  const fresh = add.filter((e) => !seen.has(e.seq));
  if (!fresh.length) return cur;
  return [...fresh, ...cur].sort((a, b) => b.seq - a.seq).slice(0, 200);
}

const STATUS_FILTERS = ["all", "running", "degraded", "pending", "stopped"];

export function Overview({ cluster }) {
  const status = usePoll(() => cluster.getFirst("/api/v1/status"), POLL_MS);
  const nodes = usePoll(() => cluster.getFirst("/api/v1/cluster/nodes"), POLL_MS);
  const info = usePoll(async () => {
    const data = await cluster.get("/api/v1/cluster/info");
    cluster.learn(data);
    return data;
  }, POLL_MS);
  const [which, setWhich] = useState("all");
  const services = status.data?.services;
  const shown = services && which !== "all" ? services.filter((s) => s.status === which) : services;
  useEffect(() => {
    if (services && nodes.data && !window.__orcaFirstPaint) {
      requestAnimationFrame(() => { window.__orcaFirstPaint = performance.now(); });
    }
  }, [services, nodes.data]);
  return html`<div class="page overview" data-testid="overview">
    <${Stats} services=${services} nodes=${nodes.data?.nodes} />
    <${Card} title="Masters" testid="masters-card"
      right=${info.data ? html`<span class="dim">term ${info.data.term} · commit ${info.data.commit_index}</span>` : null}>
      <${Masters} cluster=${cluster} info=${info.data} />
    </${Card}>
    <div class="grid-2">
      <${Card} title="Services" testid="services-card">
        <${ErrorLine} error=${status.error} />
        ${shown ? html`<${PagedTable} rows=${shown} columns=${serviceColumns} filterKeys=${["name", "project", "image"]}
          placeholder="Filter services" testid="services-table" empty="No services. Deploy one with: orca deploy -f FILE"
          extra=${html`<select aria-label="status" value=${which} onChange=${(e) => setWhich(e.target.value)}>
            ${STATUS_FILTERS.map((f) => html`<option value=${f}>${f}</option>`)}</select>`} />`
          : html`<p class="loading">Loading services…</p>`}
      </${Card}>
      <${EventFeed} cluster=${cluster} />
    </div>
    <${Card} title="Nodes" testid="nodes-card">
      <${ErrorLine} error=${nodes.error} />
      ${nodes.data ? html`<${PagedTable} rows=${nodes.data.nodes.map((n) => ({ ...n, mem: 0, cpu: 0 }))} columns=${nodeColumns}
        filterKeys=${["id", "status", "address"]} placeholder="Filter nodes" pageSize=${15} testid="nodes-table"
        empty="No nodes. Start an agent: orca join MASTER_URL --token-file F" />` : html`<p class="loading">Loading nodes…</p>`}
    </${Card}>
  </div>`;
}
