// The console's one link to the cluster: reads from whichever master answers, writes to the leader,
// and follows the leader through a failover. Everything the user should know about it (a master lost,
// a new leader) is put in `notice`, which the page shows as a banner.

const TOKEN_KEY = "orca.console.token";
const READ_TIMEOUT_MS = 6000;
const WRITE_DEADLINE_MS = 20000;
const NOTICE_MS = 20000;
export const RANK = { viewer: 1, deployer: 2, admin: 3 };

// The token lives in sessionStorage: this tab only, gone when it closes. `#token=...` signs in directly
// (what `orca ui` opens) and is removed from the address bar and history at once.
export function tokenFromPage() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }
  return sessionStorage.getItem(TOKEN_KEY);
}
export const saveToken = (t) => sessionStorage.setItem(TOKEN_KEY, t);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

// What the token says about its holder, for display and to hide controls the role may not use. The
// server checks the signature and the role on every request; this is only a courtesy.
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  } catch {
    return null;
  }
}
export const can = (claims, need) => (RANK[claims?.role] || 0) >= RANK[need];

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "ERROR";
    this.details = body && body.details;
  }
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // works outside secure contexts too
  return "ui-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchWithTimeout(url, init, ms) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    return await fetch(url, { ...init, signal: ctl.signal, cache: "no-store" });
  } finally {
    clearTimeout(timer);
  }
}

async function body(resp) {
  const text = await resp.text();
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    return { error: text.slice(0, 200) };
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Cluster {
  constructor(token) {
    this.token = token;
    this.current = location.origin;        // the master reads go to
    this.urls = [location.origin];         // every master's API URL, learnt from /cluster/info
    this.names = {};                       // url -> master id
    this.leaderId = null;
    this.leaderUrl = null;
    this.notice = null;                    // {level, text, at}
    this.listeners = new Set();
  }

  // Called with the server's message when a read is refused with 401 (a bad, expired or revoked token).
  onUnauthorized(fn) {
    this.unauthorized = fn;
    return () => { this.unauthorized = null; };
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  emit() {
    for (const fn of this.listeners) fn();
  }
  // A new notice joins a recent one (a lost master and the new leader are one story), the worse level wins.
  say(level, text) {
    const prev = this.liveNotice();
    const order = { info: 0, warn: 1, error: 2 };
    if (prev && prev.level !== "error" && level !== "error" && !prev.text.includes(text)) {
      text = `${prev.text} ${text}`;
      if (order[prev.level] > order[level]) level = prev.level;
    }
    this.notice = { level, text, at: Date.now() };
    this.emit();
  }
  liveNotice() {
    const n = this.notice;
    return n && (n.level === "error" || Date.now() - n.at < NOTICE_MS) ? n : null;
  }
  name(url) {
    return this.names[url] || url.replace(/^https?:\/\//, "");
  }

  // The masters, learnt from /api/v1/cluster/info (their advertised API URLs).
  learn(info) {
    if (!info || !Array.isArray(info.masters)) return;
    const urls = info.masters.map((m) => m.api_url.replace(/\/$/, ""));
    for (const m of info.masters) this.names[m.api_url.replace(/\/$/, "")] = m.id;
    this.urls = [...new Set([this.current, ...urls])];
    this.noteLeader(info.leader, info.leader_url);
    this.emit();
  }

  noteLeader(id, url) {
    if (!id) return;
    if (this.leaderId && id !== this.leaderId) {
      this.say("info", `The cluster has a new leader: ${id} (was ${this.leaderId}). Nothing to do.`);
    }
    this.leaderId = id;
    if (url) this.leaderUrl = url.replace(/\/$/, "");
  }

  candidates() {
    return [this.current, ...this.urls.filter((u) => u !== this.current)];
  }

  switchTo(url, why) {
    if (url === this.current) return;
    const from = this.current;
    this.current = url;
    this.say("warn", `Lost contact with ${this.name(from)} (${why}); the console now talks to ${this.name(url)}.`);
  }

  headers(extra) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  // A read from the first master that answers: the current one, else the next. A master that answers
  // 503 (no leader known, not caught up) is passed over too.
  async get(path, { auth = true } = {}) {
    let lastErr = null;
    for (const url of this.candidates()) {
      let resp;
      try {
        resp = await fetchWithTimeout(url + path, { headers: auth ? this.headers() : {} }, READ_TIMEOUT_MS);
      } catch (err) {
        lastErr = err.name === "AbortError" ? "timed out" : "unreachable";
        continue;
      }
      const data = await body(resp);
      if (resp.status === 503 && this.urls.length > 1) {
        lastErr = data.error || "not ready";
        continue;
      }
      this.switchTo(url, lastErr || "not ready");
      if (this.notice && this.notice.level === "error") this.say("info", `Connected to ${this.name(url)} again.`);
      const leader = (resp.headers.get("X-Orca-Leader") || "").replace(/\/$/, "");
      if (leader) {
        this.leaderUrl = leader;
        if (this.names[leader] && this.names[leader] !== this.leaderId) {
          this.noteLeader(this.names[leader], leader);
          this.emit();
        }
      }
      if (!resp.ok) {
        const err = new ApiError(resp.status, data);
        if (resp.status === 401 && this.unauthorized) this.unauthorized(err.message);
        throw err;
      }
      return data;
    }
    this.say("error", "No master answers. Retrying…");
    throw new ApiError(0, { error: "no master answers", code: "UNREACHABLE" });
  }

  // A read boot.js started before the modules loaded (used once), else a normal read.
  async getFirst(path) {
    const early = window.__orcaPrefetch && window.__orcaPrefetch[path];
    if (early) {
      delete window.__orcaPrefetch[path];
      try {
        return await early;
      } catch {
        /* fall through to a normal read, with its failover and 401 handling */
      }
    }
    return this.get(path);
  }

  async getPublic(url, path) {
    const resp = await fetchWithTimeout(url + path, {}, 2500);
    return body(resp);
  }

  async refreshLeader() {
    for (const url of this.candidates()) {
      try {
        const data = await this.getPublic(url, "/api/v1/cluster/leader");
        if (data.leader_url) {
          this.noteLeader(data.leader_id, data.leader_url);
          return this.leaderUrl;
        }
      } catch {
        /* try the next master */
      }
    }
    return null;
  }

  // A write goes to the leader. When it moved (307, refused by redirect: "error"), is being elected
  // (503) or is gone (network error), ask again who leads and retry with the same Idempotency-Key, so
  // a write that did commit before the failure is not done twice.
  async write(method, path, payload) {
    const key = randomKey();
    const deadline = Date.now() + WRITE_DEADLINE_MS;
    let lastErr = "no leader";
    while (Date.now() < deadline) {
      const url = this.leaderUrl || (await this.refreshLeader()) || this.current;
      let resp;
      try {
        resp = await fetchWithTimeout(url + path, {
          method,
          redirect: "error",
          headers: this.headers({ "Content-Type": "application/json", "Idempotency-Key": key }),
          body: payload === undefined ? undefined : JSON.stringify(payload),
        }, READ_TIMEOUT_MS);
      } catch (err) {
        lastErr = err.name === "AbortError" ? "the leader did not answer in time" : "the leader moved or is unreachable";
        this.leaderUrl = null;
        await sleep(400);
        continue;
      }
      const data = await body(resp);
      if (resp.status === 503 || data.code === "NOT_LEADER") {
        lastErr = data.error || "no leader";
        this.leaderUrl = null;
        await sleep(400);
        continue;
      }
      if (!resp.ok) {
        const err = new ApiError(resp.status, data);
        if (resp.status === 401 && this.unauthorized) this.unauthorized(err.message);
        throw err;
      }
      return data;
    }
    throw new ApiError(503, { error: `gave up after ${WRITE_DEADLINE_MS / 1000} s: ${lastErr}`, code: "NOT_READY" });
  }

  // Browsers cannot put headers on a WebSocket: the token goes in ?access_token= (stream routes only).
  socket(path) {
    const sep = path.includes("?") ? "&" : "?";
    const base = this.current.replace(/^http/, "ws");
    return new WebSocket(`${base}${path}${sep}access_token=${encodeURIComponent(this.token)}`);
  }
}
