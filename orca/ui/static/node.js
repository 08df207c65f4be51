// The page of one worker node: capacity, its replicas, and drain state and progress.
import { can } from "./api.js";
import { Action, ago, Badge, Bar, bytes, Card, ErrorLine, html, usePoll } from "./ui.js";

function Drain({ drain }) {
  if (!drain) return null;
  const total = drain.remaining + drain.migrated + drain.failed;
  return html`<${Card} title="Drain" testid="drain-card">
    <p>${drain.complete ? html`Drain complete ${ago(drain.completed_at)}.` : html`Draining since ${ago(drain.started_at)}; deadline ${new Date(drain.deadline).toLocaleTimeString()}${drain.force ? " (forced: replicas stopped at once)" : ""}.`}</p>
    <${Bar} used=${drain.migrated + drain.failed} total=${total || 1}
      label=${`${drain.migrated} moved, ${drain.failed} stopped, ${drain.remaining} still here`} testid="drain-progress" />
  </${Card}>`;
}

export function NodePage({ cluster, claims, id }) {
  const node = usePoll(() => cluster.get(`/api/v1/cluster/nodes/${encodeURIComponent(id)}`), 2000, [id]);
  const n = node.data;
  if (!n) {
    return html`<div class="page"><p class="crumbs"><a href="#/">Overview</a> / ${id}</p>
      ${node.error ? html`<${ErrorLine} error=${node.error} />` : html`<p class="loading">Loading ${id}…</p>`}</div>`;
  }
  const path = `/api/v1/cluster/nodes/${encodeURIComponent(id)}`;
  const draining = n.eligibility !== "eligible" || (n.drain && !n.drain.complete);
  return html`<div class="page node" data-testid="node-page">
    <p class="crumbs"><a href="#/">Overview</a> / nodes / ${n.id}</p>
    <div class="title-row">
      <h1>${n.id} <${Badge} text=${n.status} /> <${Badge} text=${n.drain && !n.drain.complete ? "draining" : n.eligibility} /></h1>
      ${can(claims, "admin") ? html`<div class="actions" data-testid="actions">
        ${draining ? html`<${Action} label="Undrain" testid="undrain" tone="primary"
            run=${async () => { await cluster.write("POST", `${path}/undrain`); node.reload(); }} />`
          : html`<${Action} label="Drain" testid="drain" tone="danger"
            confirm=${`Move every replica off ${n.id} (new ones start elsewhere first), then keep it empty. Replicas still here after 5 minutes are stopped.`}
            run=${async () => { await cluster.write("POST", `${path}/drain`, { deadline_s: 300 }); node.reload(); }} />`}
      </div>` : html`<p class="dim viewer-note" data-testid="viewer-note">Read-only: drain and undrain need an admin token.</p>`}
    </div>
    <div class="facts">
      <div><span>address</span><strong class="mono">${n.address}</strong></div>
      <div><span>last report</span><strong>${ago(n.last_heartbeat)}</strong></div>
      <div><span>status since</span><strong>${ago(n.status_since)}${n.status_reason ? ` (${n.status_reason})` : ""}</strong></div>
      <div><span>agent</span><strong>${n.agent_version || "–"}</strong></div>
      <div><span>replicas</span><strong>${n.allocations}</strong></div>
      <div class="wide"><span>labels</span><strong>${Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"}</strong></div>
    </div>
    <div class="grid-2 even">
      <${Card} title="Capacity">
        <div class="capacity">
          <label>Memory</label><${Bar} used=${n.allocated.memory} total=${n.capacity.memory || 0} label=${`${bytes(n.allocated.memory)} of ${bytes(n.capacity.memory)} reserved`} />
          <label>CPU</label><${Bar} used=${n.allocated.cpu} total=${n.capacity.cpu || 0} label=${`${n.allocated.cpu} of ${n.capacity.cpu ?? "–"} cores reserved`} />
        </div>
      </${Card}>
      <${Drain} drain=${n.drain} />
    </div>
    <${Card} title="Replicas on this node" testid="node-allocations">
      <table><thead><tr><th>Service</th><th>#</th><th>Allocation</th><th>Version</th><th>Status</th><th>Health</th></tr></thead>
        <tbody>
          ${(n.allocation_list || []).length === 0 ? html`<tr><td colspan="6" class="empty">No replicas on this node.</td></tr>` : null}
          ${(n.allocation_list || []).map((a) => html`<tr key=${a.id}>
            <td><a href=${`#/services/${encodeURIComponent(a.service)}`}>${a.service}</a></td><td class="num">${a.index}</td>
            <td class="mono">${a.id.slice(0, 12)}</td><td>v${a.version}</td><td><${Badge} text=${a.status} /></td>
            <td>${a.health ? html`<${Badge} text=${a.health} />` : "–"}</td></tr>`)}
        </tbody></table>
    </${Card}>
  </div>`;
}
