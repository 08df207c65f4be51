// The page of one service: replicas, actions, live metrics (with the last hour), versions, logs, policy.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { can } from "./api.js";
import { TimeChart } from "./charts.js";
import { EventFeed } from "./overview.js";
import { Action, ago, Badge, Card, ErrorLine, html, usePoll, useSocket } from "./ui.js";

const HOUR_OF_SAMPLES = 1800; // the leader samples every 2 s and keeps an hour
const MAX_LOG_LINES = 2000;

function Actions({ cluster, claims, svc, reload }) {
  const [replicas, setReplicas] = useState(String(svc.replicas.desired));
  const [done, setDone] = useState(null);
  useEffect(() => setReplicas(String(svc.replicas.desired)), [svc.replicas.desired]);
  if (!can(claims, "deployer")) return html`<p class="dim viewer-note" data-testid="viewer-note">Read-only: your token's role is ${claims?.role || "unknown"}.</p>`;
  const path = `/api/v1/services/${encodeURIComponent(svc.name)}`;
  const after = (text) => { setDone(text); reload(); };
  const target = Number(replicas);
  const down = Number.isInteger(target) && target < svc.replicas.desired;
  return html`<div class="actions" data-testid="actions">
    <span class="scale">
      <input type="number" min="0" max="1000" value=${replicas} data-testid="scale-input" aria-label="replicas"
        onInput=${(e) => setReplicas(e.target.value)} />
      <${Action} label="Scale" testid="scale" tone="primary"
        disabled=${!Number.isInteger(target) || target < 0 || target === svc.replicas.desired}
        confirm=${down ? `Scale ${svc.name} from ${svc.replicas.desired} down to ${target} replicas: ${svc.replicas.desired - target} containers will be stopped.` : null}
        run=${async () => { const r = await cluster.write("POST", `${path}/scale`, { replicas: target }); after(`scaled ${r.previous ?? ""}→${target}`); }} />
    </span>
    <${Action} label="Restart" testid="restart" tone="danger"
      confirm=${`Stop every replica of ${svc.name}, then start new ones. The service is down in between.`}
      run=${async () => { await cluster.write("DELETE", path); await cluster.write("POST", `${path}/start`); after("restarted"); }} />
    <${Action} label="Rollback" testid="rollback" tone="danger" disabled=${svc.version <= 1 && !svc.canary}
      confirm=${svc.canary ? `Drop the canary of ${svc.name}.` : `Roll ${svc.name} back to the version before v${svc.version}.`}
      run=${async () => {
        const r = await cluster.write("POST", `${path}/rollback`);
        after(r.dropped_canary ? `dropped canary v${r.dropped_canary}` : `rolled back: now v${r.version}, the spec of v${r.spec_of}`);
      }} />
    ${svc.canary ? html`<${Action} label="Promote canary" testid="promote" tone="primary"
      confirm=${`Roll the canary v${svc.canary.version} out to every replica of ${svc.name}.`}
      run=${async () => { const r = await cluster.write("POST", `${path}/promote`); after(`promoted v${r.version ?? ""}`); }} />` : null}
    ${done ? html`<span class="done" data-testid="action-done">${done}</span>` : null}
  </div>`;
}

function Replicas({ containers }) {
  return html`<table data-testid="replicas-table">
    <thead><tr><th>#</th><th>Allocation</th><th>Container</th><th>Node</th><th>Version</th><th>Status</th><th>Health</th>
      <th class="num">Restarts</th><th class="num">Port</th><th>Started</th><th>Reason</th></tr></thead>
    <tbody>
      ${containers.length === 0 ? html`<tr><td colspan="11" class="empty">No replicas.</td></tr>` : null}
      ${containers.map((c) => html`<tr key=${c.alloc} data-testid="replica">
        <td class="num">${c.index}</td><td class="mono">${c.alloc.slice(0, 12)}</td>
        <td class="mono" data-testid="container-id">${c.id ? c.id.slice(0, 12) : "–"}</td>
        <td><a href=${`#/nodes/${encodeURIComponent(c.node)}`}>${c.node}</a></td><td>v${c.version}</td>
        <td><${Badge} text=${c.status} /></td><td>${c.health ? html`<${Badge} text=${c.health} />` : "–"}</td>
        <td class="num">${c.restarts}</td><td class="num">${c.host_port ?? "–"}</td>
        <td>${c.started_at ? ago(c.started_at) : "–"}</td><td class="reason">${c.reason || ""}</td>
      </tr>`)}
    </tbody>
  </table>`;
}

function Metrics({ cluster, name }) {
  const [samples, setSamples] = useState([]);
  const [note, setNote] = useState(null);
  useEffect(() => {
    let gone = false;
    cluster.get(`/api/v1/services/${encodeURIComponent(name)}/metrics?history=${HOUR_OF_SAMPLES}`)
      .then((d) => { if (!gone) setSamples((cur) => merge(cur, d.history || [])); })
      .catch((err) => { if (!gone) setNote(err.message); });
    return () => { gone = true; };
  }, [name]);
  const live = useSocket(() => cluster.socket(`/api/v1/services/${encodeURIComponent(name)}/metrics/stream`), (data) => {
    const msg = JSON.parse(data);
    if (msg.error) { setNote(msg.error); return; }
    setNote(null);
    if (msg.current) setSamples((cur) => merge(cur, [msg.current]));
  }, true, [name]);
  const series = useMemo(() => {
    const xs = samples.map((s) => s.at);
    const pick = (f) => samples.map((s) => { const v = f(s); return v === null || v === undefined ? null : v; });
    return {
      xs,
      rps: pick((s) => s.rps), p95: pick((s) => s.p95_ms), err: pick((s) => (s.error_rate ?? 0) * 100),
      cpu: pick((s) => s.cpu_pct), mem: pick((s) => s.mem_pct),
    };
  }, [samples]);
  return html`<${Card} title="Metrics" testid="metrics-card"
    right=${html`<span class="dim">${historyText(samples)} · </span>
      <span class="live ${live ? "on" : ""}">${live ? "live" : "connecting…"}</span>`}>
    ${note ? html`<p class="dim">${note}</p>` : null}
    <div class="charts">
      <${TimeChart} title="Requests/s" unit="/s" xs=${series.xs} ys=${series.rps} color="#2563eb" testid="chart-rps" />
      <${TimeChart} title="p95 latency" unit="ms" xs=${series.xs} ys=${series.p95} color="#7c3aed" testid="chart-p95" />
      <${TimeChart} title="Errors" unit="%" xs=${series.xs} ys=${series.err} color="#dc2626" testid="chart-errors" />
      <${TimeChart} title="CPU" unit="%" xs=${series.xs} ys=${series.cpu} color="#0891b2" testid="chart-cpu" />
      <${TimeChart} title="Memory" unit="%" xs=${series.xs} ys=${series.mem} color="#16a34a" testid="chart-mem" />
    </div>
  </${Card}>`;
}

function historyText(samples) {
  if (samples.length < 2) return "collecting samples";
  const min = Math.round((samples[samples.length - 1].at - samples[0].at) / 60);
  return min < 1 ? "the last minute" : `the last ${min} min`;
}

function merge(cur, add) {
  const last = cur.length ? cur[cur.length - 1].at : -Infinity;
  const fresh = add.filter((s) => s && s.at > last);
  if (!fresh.length) return cur;
  return [...cur, ...fresh].slice(-HOUR_OF_SAMPLES);
}

function Logs({ cluster, name }) {
  const [lines, setLines] = useState([]);
  const [follow, setFollow] = useState(true);
  const box = useRef(null);
  const opened = useRef(0);
  const live = useSocket((attempt) => {
    opened.current += 1;
    // the first connection shows the last 100 lines of each replica; a reconnection only what is new
    return cluster.socket(`/api/v1/services/${encodeURIComponent(name)}/logs/stream?tail=${attempt === 0 ? 100 : 0}`);
  }, (line) => setLines((cur) => [...cur.slice(-(MAX_LOG_LINES - 1)), line]), follow, [name]);
  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines, follow]);
  return html`<${Card} title="Logs" testid="logs-card" right=${html`
      <label class="toggle"><input type="checkbox" checked=${follow} data-testid="logs-follow"
        onChange=${(e) => setFollow(e.target.checked)} /> follow</label>
      <span class="live ${live ? "on" : ""}">${follow ? (live ? "live" : "connecting…") : "paused"}</span>`}>
    <pre class="logs" ref=${box} data-testid="logs">${lines.length ? lines.join("\n") : "No log lines yet."}</pre>
  </${Card}>`;
}

function History({ cluster, name }) {
  const hist = usePoll(() => cluster.get(`/api/v1/services/${encodeURIComponent(name)}/history`), 5000, [name]);
  const versions = hist.data?.versions || [];
  return html`<${Card} title="Versions" testid="versions-card">
    <${ErrorLine} error=${hist.error} />
    <table><thead><tr><th>Version</th><th>Image</th><th>Deployed</th><th>What changed</th></tr></thead>
      <tbody>${versions.map((v) => html`<tr key=${v.version}>
        <td>v${v.version} ${v.current ? html`<${Badge} text="current" tone="ok" />` : null} ${v.canary ? html`<${Badge} text="canary" tone="info" />` : null}</td>
        <td class="mono dim">${v.image}</td><td>${ago(v.at)}</td>
        <td>${v.changed === undefined ? "" : v.changed.length ? v.changed.join(", ") : v === versions[versions.length - 1] ? "first version" : "nothing (redeploy)"}</td>
      </tr>`)}</tbody></table>
  </${Card}>`;
}

function Scaling({ cluster, name }) {
  const pol = usePoll(() => cluster.get(`/api/v1/services/${encodeURIComponent(name)}/scaling`), 10000, [name]);
  const policy = pol.data?.scaling;
  return html`<${Card} title="Scaling policy" testid="scaling-card">
    <${ErrorLine} error=${pol.error} />
    ${pol.data && !policy ? html`<p class="dim">Scaled by hand (no autoscaling policy). Set one with <code>orca scaling set ${name}</code>.</p>` : null}
    ${policy ? html`<dl class="kv">${Object.entries(policy).map(([k, v]) => html`<dt>${k.replace(/_/g, " ")}</dt><dd>${String(v)}</dd>`)}</dl>` : null}
  </${Card}>`;
}

export function ServicePage({ cluster, claims, name }) {
  const detail = usePoll(() => cluster.get(`/api/v1/services/${encodeURIComponent(name)}`), 2000, [name]);
  const svc = detail.data;
  if (!svc) {
    return html`<div class="page"><p class="crumbs"><a href="#/">Overview</a> / ${name}</p>
      ${detail.error ? html`<${ErrorLine} error=${detail.error} />` : html`<p class="loading">Loading ${name}…</p>`}</div>`;
  }
  const r = svc.replicas;
  return html`<div class="page service" data-testid="service-page">
    <p class="crumbs"><a href="#/">Overview</a> / services / ${svc.name}</p>
    <div class="title-row">
      <h1>${svc.name} <${Badge} text=${svc.status} /></h1>
      <${Actions} cluster=${cluster} claims=${claims} svc=${svc} reload=${detail.reload} />
    </div>
    <div class="facts">
      <div><span>replicas</span><strong data-testid="svc-replicas">${r.running}/${r.desired} running</strong></div>
      <div><span>healthy</span><strong>${r.healthy}</strong></div>
      <div><span>version</span><strong>v${svc.version}</strong></div>
      <div><span>rollout</span><strong>${svc.rollout ? html`<${Badge} text=${svc.rollout.state} /> v${svc.rollout.from ?? "–"} → v${svc.rollout.version}` : "–"}</strong></div>
      <div><span>canary</span><strong>${svc.canary ? `v${svc.canary.version}` : "–"}</strong></div>
      <div><span>project</span><strong>${svc.project}</strong></div>
      <div class="wide"><span>image</span><strong class="mono">${svc.spec.image}</strong></div>
      ${svc.spec.domain ? html`<div><span>domain</span><strong>${svc.spec.domain}</strong></div>` : null}
    </div>
    ${svc.pending_reason ? html`<p class="pending" data-testid="pending-reason">Not all replicas run: ${svc.pending_reason}</p>` : null}
    <${Card} title="Replicas" testid="replicas-card"><${Replicas} containers=${svc.containers} /></${Card}>
    <${Metrics} cluster=${cluster} name=${svc.name} />
    <div class="grid-2">
      <${Logs} cluster=${cluster} name=${svc.name} />
      <div class="stack">
        <${Scaling} cluster=${cluster} name=${svc.name} />
        <${History} cluster=${cluster} name=${svc.name} />
      </div>
    </div>
    <${EventFeed} cluster=${cluster} service=${svc.name} testid="service-events" />
  </div>`;
}
