/* modelpack show: the interactive graph page.
 *
 * Data: the JSON in #mp-data (built by modelpack/show/model.py). Layout: dagre,
 * one small graph per *container* (the top level or one expanded module), laid
 * out lazily the first time it is shown and cached until something inside it
 * is expanded or collapsed. An expanded module is a box of the size of its own
 * layout inside its parent's layout, so expanding one module lays out only it
 * and its ancestors. Text from the file only ever reaches the DOM as
 * textContent or attribute values: nothing read from the model is parsed as HTML.
 */
(function () {
  "use strict";
  const t0 = performance.now();
  const M = JSON.parse(document.getElementById("mp-data").textContent);
  const N = M.nodes, G = M.groups, E = M.edges;
  const SVGNS = "http://www.w3.org/2000/svg";
  const PAD = 10, HEAD = 20, BIG = 60;

  // ---------------------------------------------------------------- hierarchy
  const kids = new Map([[-1, []]]);           // container (-1 = top) -> [{g: i} | {n: i}]
  G.forEach((g, i) => kids.set(i, []));
  const chain = N.map((n) => { const c = []; for (let g = n.group; g >= 0; g = G[g].parent) c.unshift(g); return c; });
  const gchain = G.map((g) => { const c = []; for (let p = g.parent; p >= 0; p = G[p].parent) c.unshift(p); return c; });
  const placed = new Uint8Array(G.length);
  const size = new Int32Array(G.length);     // leaf nodes below each group
  const gparams = new Float64Array(G.length);
  N.forEach((n, i) => {
    chain[i].forEach((g) => {
      if (!placed[g]) { placed[g] = 1; kids.get(G[g].parent).push({ g: g }); }
      size[g] += 1;
      (n.params || []).forEach((p) => { gparams[g] += p.numel; });
    });
    kids.get(n.group).push({ n: i });
  });
  const expanded = new Uint8Array(G.length);
  const layouts = new Map();                   // container -> {w, h, pos: Map(key -> {x, y, w, h}), edges: Map}

  const key = (it) => (it.g !== undefined ? "g" + it.g : "n" + it.n);
  const leafName = (name, g) => (g >= 0 ? name.slice(G[g].name.length + 1) : name);

  /** The item of container `c` holding node `n` (or null if n lies outside c). */
  function liftNode(n, c) {
    const ch = chain[n];
    if (c === -1) return ch.length ? { g: ch[0] } : { n: n };
    const at = ch.indexOf(c);
    if (at < 0) return null;
    return at + 1 < ch.length ? { g: ch[at + 1] } : { n: n };
  }

  // Edges belong to the container that is their endpoints' lowest common ancestor (LCA). Inside
  // each module below the LCA, an edge enters through a port node "^in" at the top of the module's
  // layout (or leaves through "^out" at the bottom), so dagre routes it around the module's boxes.
  const edgesOf = new Map(), lcaDepth = new Int32Array(E.length);
  const ports = new Map();                     // container -> {in: Set(item key), out: Set(item key)}
  const port = (c) => { if (!ports.has(c)) ports.set(c, { in: new Set(), out: new Set() }); return ports.get(c); };
  E.forEach((e, k) => {
    const a = chain[e[0]], b = chain[e[1]];
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    lcaDepth[k] = i;
    const c = i ? a[i - 1] : -1;
    if (!edgesOf.has(c)) edgesOf.set(c, []);
    edgesOf.get(c).push(k);
    for (let j = i; j < b.length; j++) port(b[j]).in.add(key(liftNode(e[1], b[j])));
    for (let j = i; j < a.length; j++) port(a[j]).out.add(key(liftNode(e[0], a[j])));
  });

  /** The visible item showing node n: n itself, or its outermost collapsed ancestor. */
  function visible(n) {
    for (const g of chain[n]) if (!expanded[g]) return "g" + g;
    return "n" + n;
  }

  // ---------------------------------------------------------------- sizes and layout
  const CH = 6.4;
  function nodeLabel(i) {
    const n = N[i];
    if (n.kind === "input" || n.kind === "output") return [n.kind + " " + n.name, n.shape || ""];
    return [n.type, leafName(n.name, n.group)];
  }
  function groupLabel(g) {
    const name = leafName(G[g].name, G[g].parent);
    return [name, size[g] + " nodes" + (gparams[g] ? " \u00b7 " + human(gparams[g], "") : "")];
  }
  function boxSize(it) {
    if (it.n !== undefined) {
      const l = nodeLabel(it.n);
      return { w: Math.max(70, Math.max(l[0].length * 1.12, l[1].length * 0.95) * CH + 18), h: 34 };
    }
    if (expanded[it.g]) {
      const L = layout(it.g);
      const l = groupLabel(it.g);
      return { w: Math.max(L.w + 2 * PAD, (l[0].length + l[1].length) * CH + 40), h: L.h + 2 * PAD + HEAD };
    }
    const l = groupLabel(it.g);
    return { w: Math.max(90, Math.max(l[0].length, l[1].length) * CH + 30), h: 40 };
  }

  function layout(c) {
    if (layouts.has(c)) return layouts.get(c);
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "TB", nodesep: 18, ranksep: 28, edgesep: 8, marginx: 0, marginy: 0 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const it of kids.get(c)) { const s = boxSize(it); g.setNode(key(it), { width: s.w, height: s.h }); }
    for (const k of edgesOf.get(c) || []) {
      const a = key(liftNode(E[k][0], c)), b = key(liftNode(E[k][1], c));
      if (a !== b && !g.hasEdge(a, b)) g.setEdge(a, b);
    }
    const pt = ports.get(c);
    if (pt && pt.in.size) { g.setNode("^in", { width: 1, height: 1 }); pt.in.forEach((k) => g.setEdge("^in", k)); }
    if (pt && pt.out.size) { g.setNode("^out", { width: 1, height: 1 }); pt.out.forEach((k) => g.setEdge(k, "^out")); }
    const t = performance.now();
    dagre.layout(g);
    stats.layout += performance.now() - t;
    stats.layouts += 1;
    const pos = new Map(), edges = new Map();
    g.nodes().forEach((k) => { const v = g.node(k); pos.set(k, { x: v.x - v.width / 2, y: v.y - v.height / 2, w: v.width, h: v.height }); });
    g.edges().forEach((e) => edges.set(e.v + ">" + e.w, g.edge(e).points));
    const gr = g.graph();
    const L = { w: Math.max(gr.width || 0, 1), h: Math.max(gr.height || 0, 1), pos: pos, edges: edges };
    layouts.set(c, L);
    return L;
  }

  function invalidate(g) {
    for (let c = g; c >= 0; c = G[c].parent) layouts.delete(c);
    layouts.delete(-1);
  }

  // ---------------------------------------------------------------- drawing
  const view = document.getElementById("mp-view");
  const svg = document.getElementById("mp-svg");
  let boxes = new Map();                       // visible key -> absolute {x, y, w, h}
  let selected = null;

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, cls, s) {
    const t = el("text", { x: x, y: y, class: cls }, parent);
    t.textContent = s;
    return t;
  }

  function drawContainer(c, ox, oy, layers) {
    const L = layout(c);
    for (const it of kids.get(c)) {
      const k = key(it), p = L.pos.get(k);
      const b = { x: ox + p.x, y: oy + p.y, w: p.w, h: p.h, c: c };
      boxes.set(k, b);
      if (it.n !== undefined) drawNode(it.n, b, layers.nodes);
      else drawGroup(it.g, b, layers);
    }
    for (const [ek, pts] of L.edges) layers.routes.set(c + "|" + ek, pts.map((q) => [ox + q.x, oy + q.y]));
  }

  function drawNode(i, b, parent) {
    const n = N[i];
    const g = el("g", { class: "node kind-" + n.kind, transform: "translate(" + b.x + "," + b.y + ")" }, parent);
    g.dataset.id = "n" + i;
    g.dataset.name = n.name;
    el("rect", { width: b.w, height: b.h, rx: 4 }, g);
    const l = nodeLabel(i);
    text(g, 8, 14, "t", l[0]);
    text(g, 8, 27, "n", l[1]);
    if (selected === "n" + i) g.classList.add("sel");
  }

  function drawGroup(gi, b, layers) {
    const open = !!expanded[gi];
    const g = el("g", { class: "group " + (open ? "expanded" : "collapsed"), transform: "translate(" + b.x + "," + b.y + ")" }, layers.groups);
    g.dataset.id = "g" + gi;
    g.dataset.name = G[gi].name;
    el("rect", { class: "box", width: b.w, height: b.h, rx: 6 }, g);
    const l = groupLabel(gi);
    if (open) {
      el("rect", { class: "head", width: b.w, height: HEAD, rx: 6 }, g);
      text(g, 8, 14, "g", "\u25be " + l[0]);
      text(g, 8 + (l[0].length + 3) * CH, 14, "c", l[1]);
      drawContainer(gi, b.x + PAD, b.y + HEAD + PAD, layers);
    } else {
      text(g, 8, 16, "g", "\u25b8 " + l[0]);
      text(g, 8, 30, "c", l[1]);
    }
    if (selected === "g" + gi) g.classList.add("sel");
  }

  function render() {
    const t = performance.now();
    view.textContent = "";
    boxes = new Map();
    const edgeLayer = el("g", { class: "edges" }, view);
    const layers = { groups: el("g", { class: "groups" }, view), nodes: null, routes: new Map() };
    view.insertBefore(layers.groups, edgeLayer);
    layers.nodes = el("g", { class: "nodes" }, view);
    drawContainer(-1, 0, 0, layers);
    drawEdges(edgeLayer, layers.routes);
    stats.render = performance.now() - t;
  }

  function drawEdges(parent, routes) {
    const seen = new Map();
    E.forEach((e, k) => {
      const a = visible(e[0]), b = visible(e[1]);
      if (a === b) return;
      const pair = a + ">" + b;
      if (seen.has(pair)) { if (seen.get(pair).label !== e[2]) seen.get(pair).label = null; return; }
      seen.set(pair, { k: k, label: e[2] == null ? null : e[2] });
    });
    const frag = document.createDocumentFragment();
    for (const [pair, v] of seen) {
      const ab = pair.split(">");
      const r = compose(v.k, routes);
      const pts = r.pts.length > 1 ? r.pts : curve(boxes.get(ab[0]), boxes.get(ab[1]));
      const p = el("path", { class: "edge", d: pathOf(pts) }, frag);
      p.dataset.from = ab[0];
      p.dataset.to = ab[1];
      if (v.label) {
        const m = r.mid || midpoint(pts);
        text(frag, m[0] + 4, m[1] + 3, "elabel", v.label);
      }
    }
    parent.appendChild(frag);
  }

  /** Edge k's polyline: out through the ports of the expanded modules around its source, across
   *  the LCA's layout, in through the ports of the modules around its target. */
  function compose(k, routes) {
    const s = E[k][0], t = E[k][1], i = lcaDepth[k], c0 = i ? chain[s][i - 1] : -1;
    const pts = [];
    let mid = null;
    const add = (c, u, v) => { const r = routes.get(c + "|" + u + ">" + v); if (r) pts.push.apply(pts, r); return r; };
    const open = (ch) => { const out = []; for (let j = i; j < ch.length && expanded[ch[j]]; j++) out.push(ch[j]); return out; };
    const leaving = open(chain[s]), entering = open(chain[t]);
    for (let j = leaving.length - 1; j >= 0; j--) add(leaving[j], key(liftNode(s, leaving[j])), "^out");
    const across = add(c0, key(liftNode(s, c0)), key(liftNode(t, c0)));
    if (across) mid = midpoint(across);
    for (const g of entering) add(g, "^in", key(liftNode(t, g)));
    return { pts: pts, mid: mid };
  }

  function curve(a, b) {
    const s = [a.x + a.w / 2, a.y + a.h], t = [b.x + b.w / 2, b.y];
    const dy = Math.max(20, Math.abs(t[1] - s[1]) / 2);
    return { bezier: [s, [s[0], s[1] + dy], [t[0], t[1] - dy], t] };
  }
  function pathOf(pts) {
    if (pts.bezier) { const q = pts.bezier; return "M" + q[0] + "C" + q[1] + " " + q[2] + " " + q[3]; }
    let d = "M" + pts[0][0] + "," + pts[0][1];
    for (let i = 1; i < pts.length; i++) d += "L" + pts[i][0] + "," + pts[i][1];
    return d;
  }
  function midpoint(pts) {
    if (pts.bezier) { const q = pts.bezier; return [(q[0][0] + q[3][0]) / 2, (q[0][1] + q[3][1]) / 2]; }
    return pts[Math.floor(pts.length / 2)];
  }

  // ---------------------------------------------------------------- pan and zoom
  const vt = { k: 1, x: 0, y: 0 };
  function apply() { view.setAttribute("transform", "translate(" + vt.x + "," + vt.y + ") scale(" + vt.k + ")"); }
  /** Fit the whole graph; with `readable`, never below a legible zoom (then show the top of the graph). */
  function fit(readable) {
    const L = layout(-1), r = svg.getBoundingClientRect();
    const w = Math.max(r.width, 100), h = Math.max(r.height - 44, 100);
    const kw = (w - 40) / L.w, k = Math.min(1.4, kw, (h - 30) / L.h);
    vt.k = readable === true && k < 0.6 ? Math.min(1, Math.max(0.6, kw)) : k;
    vt.x = (w - L.w * vt.k) / 2;
    vt.y = 44 + Math.max(10, (h - L.h * vt.k) / 2);
    apply();
  }
  function centerOn(k) {
    const b = boxes.get(k), r = svg.getBoundingClientRect();
    if (!b) return;
    vt.k = Math.max(vt.k, 0.8);
    vt.x = r.width / 2 - (b.x + b.w / 2) * vt.k;
    vt.y = r.height / 2 - (b.y + b.h / 2) * vt.k;
    apply();
  }
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const f = Math.exp(-ev.deltaY * 0.0015), k = Math.min(4, Math.max(0.02, vt.k * f));
    vt.x = mx - (mx - vt.x) * (k / vt.k);
    vt.y = my - (my - vt.y) * (k / vt.k);
    vt.k = k;
    apply();
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, vx: vt.x, vy: vt.y, moved: false }; });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    drag.moved = true;
    svg.classList.add("dragging");
    vt.x = drag.vx + dx; vt.y = drag.vy + dy; apply();
  });
  window.addEventListener("pointerup", () => { svg.classList.remove("dragging"); setTimeout(() => { drag = null; }, 0); });

  // ---------------------------------------------------------------- interaction
  function toggle(gi, open) {
    if (!!expanded[gi] === open) return;
    expanded[gi] = open ? 1 : 0;
    invalidate(gi);
    render();
  }
  function setAll(open) {
    expanded.fill(open ? 1 : 0);
    layouts.clear();
    render();
    fit(false);
  }
  function reveal(k) {
    const gs = k[0] === "n" ? chain[+k.slice(1)] : gchain[+k.slice(1)];
    let changed = false;
    gs.forEach((g) => { if (!expanded[g]) { expanded[g] = 1; invalidate(g); changed = true; } });
    if (changed) render();
    select(k);
    centerOn(k);
  }

  svg.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const hit = ev.target.closest(".node, .group");
    if (!hit) return;
    const k = hit.dataset.id;
    if (k[0] === "g") {
      const gi = +k.slice(1);
      const onHead = !expanded[gi] || ev.target.classList.contains("head") || ev.target.tagName === "text";
      if (onHead) { selected = k; toggle(gi, !expanded[gi]); select(k); return; }
    }
    select(k);
  });

  function select(k) {
    selected = k;
    view.querySelectorAll(".sel").forEach((e) => e.classList.remove("sel"));
    const e = view.querySelector('[data-id="' + k + '"]');
    if (e) e.classList.add("sel");
    showInfo(k);
  }

  // ---------------------------------------------------------------- panels
  const info = document.getElementById("mp-info");
  function human(n, unit) {
    const u = unit === "B" ? ["B", "KiB", "MiB", "GiB", "TiB"] : ["", "K", "M", "G", "T"];
    const step = unit === "B" ? 1024 : 1000;
    let i = 0;
    while (n >= step && i < u.length - 1) { n /= step; i++; }
    return (i ? n.toFixed(n < 10 ? 2 : 1) : String(n)) + (unit === "B" ? " " : "") + u[i];
  }
  function h(tag, cls, s, parent) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (s !== undefined && s !== null) e.textContent = s;
    if (parent) parent.appendChild(e);
    return e;
  }
  function rows(parent, pairs) {
    const t = h("table", null, null, parent);
    pairs.forEach((p) => { const r = h("tr", null, null, t); h("td", "k", p[0], r); h("td", null, p[1], r); });
    return t;
  }
  function link(parent, k, label) {
    const a = h("a", null, label, parent);
    a.addEventListener("click", () => reveal(k));
    return a;
  }
  function where(line) { return line ? M.source + ":" + line : null; }

  function showInfo(k) {
    info.textContent = "";
    info.style.display = "block";
    const x = h("button", "close", "\u00d7", info);
    x.addEventListener("click", () => { info.style.display = "none"; });
    if (k[0] === "g") return groupInfo(+k.slice(1));
    const n = N[+k.slice(1)];
    h("h3", null, n.name, info);
    h("div", "type", n.kind + " " + n.type, info);
    const facts = [];
    if (n.shape) facts.push(["output", n.shape]);
    if (n.dtype) facts.push(["dtype", n.dtype]);
    if (n.of) facts.push(["from node", n.of]);
    if (where(n.line)) facts.push(["spec", where(n.line)]);
    if (facts.length) rows(info, facts).className = "facts";
    const ins = E.filter((e) => N[e[1]] === n);
    if (ins.length) {
      h("h4", null, "inputs", info);
      const d = h("div", "ins", null, info);
      ins.forEach((e, j) => { if (j) d.appendChild(document.createTextNode(", ")); link(d, "n" + e[0], N[e[0]].name); });
    }
    if (n.args !== undefined) {
      h("h4", null, "arguments", info);
      h("pre", "args", Object.keys(n.args).length ? JSON.stringify(n.args, null, 1) : "(none)", info);
    }
    if (n.params && n.params.length) {
      h("h4", null, "parameters", info);
      const t = h("table", "params", null, info);
      n.params.forEach((p) => {
        const r = h("tr", null, null, t);
        h("td", null, p.name, r); h("td", null, "[" + p.shape.join(", ") + "]", r);
        h("td", null, p.dtype, r); h("td", null, human(p.bytes, "B"), r);
      });
    }
  }

  function groupInfo(gi) {
    const g = G[gi];
    h("h3", null, g.name, info);
    h("div", "type", "module \u00b7 " + size[gi] + " nodes", info);
    const facts = [["parameters", human(gparams[gi], "")]];
    if (where(g.line)) facts.push(["spec", where(g.line)]);
    rows(info, facts);
    const b = h("button", null, expanded[gi] ? "Collapse" : "Expand", info);
    b.addEventListener("click", () => { toggle(gi, !expanded[gi]); select("g" + gi); });
  }

  function sidebar() {
    const s = document.getElementById("mp-side");
    h("h1", null, M.name, s);
    h("div", "src", M.file, s);
    h("h2", null, "inputs", s);
    rows(s, Object.keys(M.inputs).map((k) => [k, "[" + M.inputs[k].shape.join(", ") + "] " + (M.inputs[k].dtype || "float32")]));
    h("h2", null, "outputs", s);
    rows(s, M.outputs.map((o) => [o[0], o[0] === o[1] ? (N.find((n) => n.name === o[1] && n.kind !== "output") || {}).shape || "" : o[1]]));
    h("h2", null, "size", s);
    const nodes = N.filter((n) => n.kind === "layer" || n.kind === "op").length;
    rows(s, [["parameters", human(M.totals.params, "") + " (" + M.totals.params.toLocaleString("en") + ")"],
      ["bytes", human(M.totals.bytes, "B")], ["tensors", String(M.totals.tensors)],
      ["nodes", String(nodes)], ["modules", String(G.length)],
      ["shapes", M.shapes], ["tensors from", M.weights]]).id = "mp-totals";
    const keys = Object.keys(M.metadata);
    if (keys.length) { h("h2", null, "metadata", s); rows(s, keys.map((k) => [k, M.metadata[k]])).id = "mp-metadata"; }
  }

  // ---------------------------------------------------------------- search
  const search = document.getElementById("mp-search"), results = document.getElementById("mp-results");
  const index = N.map((n, i) => ["n" + i, n.name, n.type]).concat(G.map((g, i) => ["g" + i, g.name, "module"]));
  function find(q) {
    q = q.trim().toLowerCase();
    if (!q) return [];
    const exact = [], part = [];
    for (const r of index) {
      const name = r[1].toLowerCase();
      if (name === q) exact.push(r);
      else if (name.includes(q) || r[2].toLowerCase() === q) part.push(r);
      if (part.length > 200) break;
    }
    return exact.concat(part).slice(0, 100);
  }
  search.addEventListener("input", () => {
    results.textContent = "";
    const found = find(search.value);
    found.forEach((r, j) => {
      const d = h("div", j ? null : "active", r[1], results);
      d.dataset.id = r[0];
      h("span", "t", r[2], d);
      d.addEventListener("mousedown", (ev) => { ev.preventDefault(); pick(r[0]); });
    });
    results.style.display = found.length ? "block" : "none";
  });
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { const first = results.querySelector("div"); if (first) pick(first.dataset.id); }
    if (ev.key === "Escape") { results.style.display = "none"; }
  });
  search.addEventListener("blur", () => { results.style.display = "none"; });
  function pick(k) { results.style.display = "none"; reveal(k); }

  document.getElementById("mp-expand-all").addEventListener("click", () => setAll(true));
  document.getElementById("mp-collapse-all").addEventListener("click", () => setAll(false));
  document.getElementById("mp-fit").addEventListener("click", () => fit(false));

  // ---------------------------------------------------------------- start
  /** Open whole levels of the hierarchy while the view stays under BIG boxes. */
  function initialExpansion() {
    let level = kids.get(-1).filter((it) => it.g !== undefined).map((it) => it.g);
    let count = kids.get(-1).length;
    while (level.length) {
      const more = level.reduce((s, g) => s + kids.get(g).length - 1, 0);
      if (count + more > BIG) break;
      count += more;
      level.forEach((g) => { expanded[g] = 1; });
      level = level.flatMap((g) => kids.get(g).filter((it) => it.g !== undefined).map((it) => it.g));
    }
  }

  const stats = { render: 0, layout: 0, layouts: 0 };
  sidebar();
  initialExpansion();
  render();
  fit(true);
  stats.ready = performance.now() - t0;        // our script: parse data, lay out, draw
  stats.interactive = performance.now();       // since navigation start: what a person waits for
  window.addEventListener("resize", () => fit(true));
  window.modelpackShow = {
    ready: true, stats: stats,
    expandAll: () => setAll(true), collapseAll: () => setAll(false),
    reveal: (name) => { const r = index.find((x) => x[1] === name); if (r) reveal(r[0]); return !!r; },
    counts: () => ({ nodes: N.filter((n) => n.kind === "layer" || n.kind === "op").length, groups: G.length }),
  };
})();
