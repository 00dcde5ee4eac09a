// meshagent dashboard: renders the node's /api/events stream (server-sent events).
// Everything a peer says about itself (names, models) is untrusted: text only, never HTML.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => (token ? `${path}?token=${encodeURIComponent(token)}` : path);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(svgNS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const short = (id) => (id ? id.slice(-6) : "?");
const time = (t) => new Date(t * 1000).toLocaleTimeString();
const gib = (n) => (n / 2 ** 30).toFixed(1);
const kib = (n) => (n >= 1 << 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

function names(state) {
  const map = new Map();
  for (const p of state.peers) map.set(p.peer_id, p.name);
  return (id) => map.get(id) || short(id);
}

function layout(peers, width, height) {
  // This node at the top; the others on an ellipse around the centre.
  const cx = width / 2, cy = height / 2, rx = Math.max(width / 2 - 120, 60), ry = Math.max(height / 2 - 75, 50);
  const pos = new Map();
  const n = peers.length;
  peers.forEach((p, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    pos.set(p.peer_id, n === 1 ? [cx, cy] : [cx + rx * Math.cos(angle), cy + ry * Math.sin(angle)]);
  });
  return pos;
}

function battery(p) {
  if (p.battery_percent === null || p.battery_percent === undefined) return "mains";
  return `${Math.round(p.battery_percent)}%${p.on_battery ? " on battery" : " charging"}`;
}

function renderMesh(state) {
  const box = document.getElementById("mesh");
  const width = box.clientWidth, height = box.clientHeight;
  const peers = [...state.peers].sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name));
  const pos = layout(peers, width, height);
  const name = names(state);

  const edges = document.getElementById("edges");
  edges.replaceChildren();
  const self = state.self;
  const movedTo = new Set(state.moves.map((m) => m.to));
  for (const p of peers) {
    if (p.peer_id === self) continue;
    const [x1, y1] = pos.get(self), [x2, y2] = pos.get(p.peer_id);
    edges.append(svg("line", { x1, y1, x2, y2, class: movedTo.has(p.peer_id) ? "moved" : "" }));
    if (p.rtt_ms !== null) edges.append(svg("text", { x: (x1 + x2) / 2 + 6, y: (y1 + y2) / 2 - 4 }, `${p.rtt_ms} ms`));
  }

  const agentsAt = new Map();
  for (const a of state.agents) {
    if (!agentsAt.has(a.node)) agentsAt.set(a.node, []);
    agentsAt.get(a.node).push(a);
  }
  const cards = peers.map((p) => {
    const [x, y] = pos.get(p.peer_id);
    const models = p.models.filter((m) => m.kind === "llm");
    const here = agentsAt.get(p.peer_id) || [];
    const load = Math.min(1, p.load / 4);
    return el("div", { class: `node${p.self ? " self" : ""}`, style: `left:${x}px;top:${y}px`, "data-peer": p.peer_id },
      el("div", { class: "title" },
        el("span", { class: "name", title: p.peer_id }, p.name),
        el("span", { class: `badge${p.self ? " self" : ""}` }, p.self ? "this node" : p.profile + (p.emulated ? " (emulated)" : ""))),
      el("div", { class: "facts" },
        `${p.self ? p.profile + (p.emulated ? " (emulated) · " : " · ") : ""}${p.cpu_cores} cores · ${gib(p.ram_free)}/${gib(p.ram_total)} GiB · ${battery(p)}`),
      el("div", { class: "chips" }, models.length ? models.map((m) => el("span", { class: "chip", title: m.tags.join(", ") }, m.name)) : el("span", { class: "empty" }, "no LLM")),
      el("div", { class: "facts" }, `load ${p.load}${p.price_per_1k_tokens ? ` · ${p.price_per_1k_tokens}/1k tok` : ""}`),
      el("div", { class: "bar" }, el("span", { style: `width:${Math.round(load * 100)}%` })),
      here.length ? el("div", { class: "chips" }, here.slice(-6).map((a) =>
        el("span", { class: `chip agent ${a.status}`, "data-agent-chip": a.agent_id, title: `${a.agent_id}: ${a.status}` }, `${short(a.agent_id)} ${a.status}${a.moved ? " here" : ""}`))) : null);
  });
  document.getElementById("nodes").replaceChildren(...cards);
  document.getElementById("self-name").textContent = name(self);
  document.getElementById("summary").textContent =
    `${peers.length} node${peers.length === 1 ? "" : "s"} · ${state.agents.length} agent${state.agents.length === 1 ? "" : "s"}`;
}

function renderTimeline(state) {
  const name = names(state);
  const items = [
    ...state.auctions.map((a) => ({ at: a.at, kind: "auction", a })),
    ...state.moves.map((m) => ({ at: m.at, kind: "move", m })),
  ].sort((x, y) => y.at - x.at);
  const list = items.map((item) => {
    if (item.kind === "move") {
      const m = item.m;
      return el("li", { class: "move", "data-move": m.agent_id },
        el("div", { class: "when" }, time(m.at)),
        el("div", { class: "what" }, `handoff: agent ${short(m.agent_id)} → ${name(m.to)}`),
        el("div", { class: "reason" }, `${kib(m.bytes)} sealed, ${m.seconds.toFixed(2)} s${m.via ? ` via ${m.via}` : ""}`));
    }
    const a = item.a;
    const bids = el("table", { class: "bids" }, a.bids.map((b) =>
      el("tr", { class: b.bidder === a.winner ? "winner" : "" },
        el("td", {}, b.bidder === a.winner ? "★ " + name(b.bidder) : name(b.bidder)),
        el("td", {}, `${b.total_s.toFixed(2)} s`),
        el("td", {}, `price ${b.price}`),
        el("td", {}, b.model_name || ""),
        el("td", {}, b.energy || ""))));
    const declines = a.declines.length ? el("div", { class: "reason" }, `declined: ${a.declines.map((d) => `${name(d.bidder)} (${d.reason})`).join("; ")}`) : null;
    return el("li", { class: "auction", "data-auction": a.auction_id, "data-agent": a.agent_id },
      el("div", { class: "when" }, `${time(a.at)} · ${a.decision_ms} ms · ${a.messages} messages`),
      el("div", { class: "what" },
        `auction for agent ${short(a.agent_id)}${a.step !== null && a.step !== undefined ? ` step ${a.step}` : ""}: ${a.requirement || "any model"}, ${a.privacy}, ${a.policy}`),
      el("div", { class: "reason" }, `why: ${a.trigger}`),
      bids, declines,
      el("div", { class: "reason" }, `winner ${a.winner ? name(a.winner) : "none"}: ${a.reason}`));
  });
  document.getElementById("timeline").replaceChildren(...(list.length ? list : [el("li", { class: "empty" }, "no auctions or handoffs yet")]));
}

function renderAgents(state) {
  const name = names(state);
  const rows = [...state.agents].reverse().map((a) =>
    el("tr", { "data-agent": a.agent_id, "data-node": a.node },
      el("td", { class: "mono" }, a.agent_id),
      el("td", {}, a.moved ? `${a.status} (moved)` : a.status),
      el("td", {}, a.privacy),
      el("td", {}, a.policy),
      el("td", {}, name(a.node)),
      el("td", {}, a.placements.map((p) => name(p.peer)).join(" → ") || "—")));
  document.querySelector("#agents tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: 6 }, "no agents yet"))]));
  const steps = [...state.steps].reverse().map((s) =>
    el("tr", {},
      el("td", {}, time(s.finished_at)),
      el("td", { class: "mono" }, short(s.agent_id)),
      el("td", {}, s.model),
      el("td", {}, s.privacy),
      el("td", {}, `${s.prompt_tokens}${s.reused_tokens ? ` (+${s.reused_tokens} reused)` : ""} / ${s.completion_tokens}`),
      el("td", {}, s.seconds.toFixed(2))));
  document.querySelector("#steps tbody").replaceChildren(...(steps.length ? steps : [el("tr", {}, el("td", { class: "empty", colspan: 6 }, "no LLM steps here yet"))]));
}

let last = null;
function render(state) {
  last = state;
  renderMesh(state);
  renderTimeline(state);
  renderAgents(state);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource(withToken("api/events"));
  source.addEventListener("state", (event) => render(JSON.parse(event.data)));
  source.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
}

window.addEventListener("resize", () => last && renderMesh(last));
connect();
