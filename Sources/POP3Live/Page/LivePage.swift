/// The live page: one HTML file, one script, one style sheet, compiled into the binary so it works with no
/// network beyond the gateway (a classroom without internet). Every line of a session is put in the page as
/// text (`textContent`), never as markup.
enum LivePage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>popgate live</title>
        <link rel="stylesheet" href="app.css">
        <script src="app.js" defer></script>
        </head>
        <body>
        <header>
          <h1>popgate <span id="mode">gateway</span></h1>
          <span id="status" class="status">connecting…</span>
          <button id="pause" type="button">Pause</button>
          <label><input id="anomalies-only" type="checkbox"> anomalies only</label>
          <span id="missed" class="missed" hidden></span>
        </header>
        <main>
          <section id="list">
            <h2>Sessions <span id="counts"></span></h2>
            <table>
              <thead><tr><th>session</th><th>client</th><th>user</th><th>state</th><th title="octets from the client">↑</th><th title="octets from the server">↓</th><th title="anomalies">!</th><th>ended</th></tr></thead>
              <tbody id="sessions"></tbody>
            </table>
          </section>
          <section id="detail">
            <svg id="diagram" viewBox="0 0 560 150" role="img" aria-label="RFC 1939 states">
              <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z"></path></marker></defs>
              <g class="node" id="state-authorization"><rect x="10" y="50" width="150" height="44" rx="8"></rect><text x="85" y="77">AUTHORIZATION</text></g>
              <g class="node" id="state-transaction"><rect x="205" y="50" width="150" height="44" rx="8"></rect><text x="280" y="77">TRANSACTION</text></g>
              <g class="node" id="state-update"><rect x="400" y="50" width="150" height="44" rx="8"></rect><text x="475" y="77">UPDATE</text></g>
              <g class="node" id="state-tls"><rect x="10" y="2" width="150" height="34" rx="8"></rect><text x="85" y="24">TLS negotiation</text></g>
              <g class="node" id="state-closed"><rect x="400" y="110" width="150" height="34" rx="8"></rect><text x="475" y="132">closed</text></g>
              <path class="edge" d="M160,72 L203,72" marker-end="url(#arrow)"></path>
              <path class="edge" d="M355,72 L398,72" marker-end="url(#arrow)"></path>
              <path class="edge" d="M60,50 L60,38" marker-end="url(#arrow)"></path>
              <path class="edge" d="M110,38 L110,48" marker-end="url(#arrow)"></path>
              <path class="edge" d="M475,94 L475,108" marker-end="url(#arrow)"></path>
              <text class="label" x="181" y="66">PASS</text><text class="label" x="376" y="66">QUIT</text><text class="label" x="30" y="46">STLS</text>
            </svg>
            <div id="heading">Choose a session to follow its transcript.</div>
            <div id="steps" hidden><button id="step-back" type="button">◀ line</button><button id="step" type="button">line ▶</button><button id="step-all" type="button">all</button> <span id="step-at"></span></div>
            <div id="dropped" class="missed" hidden></div>
            <ol id="transcript"></ol>
          </section>
        </main>
        </body>
        </html>
        """#

    static let style = #"""
        body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
        header { display: flex; gap: 1em; align-items: center; padding: .5em 1em; background: #243447; color: #fff; }
        header h1 { font-size: 1.2em; margin: 0; }
        .status { opacity: .8; }
        .missed { background: #ffe08a; color: #4a3b00; padding: .1em .5em; border-radius: 4px; }
        main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.3fr); gap: 1em; padding: 1em; }
        table { border-collapse: collapse; width: 100%; font-size: 13px; }
        th, td { text-align: left; padding: .2em .4em; border-bottom: 1px solid #ddd; white-space: nowrap; }
        td:last-child { max-width: 12em; overflow: hidden; text-overflow: ellipsis; }
        tbody tr { cursor: pointer; }
        tbody tr:hover { background: #eef3f8; }
        tbody tr.selected { background: #d6e6f5; }
        tbody tr.open td:first-child::before { content: "● "; color: #2a8c4a; }
        td.bad { color: #b00020; font-weight: bold; }
        #diagram { width: 100%; max-width: 560px; height: auto; }
        .node rect { fill: #fff; stroke: #7a8894; stroke-width: 1.5; }
        .node text { text-anchor: middle; font-size: 13px; fill: #333; }
        .node.current rect { fill: #ffd54f; stroke: #b28704; stroke-width: 3; }
        .node.current text { font-weight: bold; }
        .edge { stroke: #7a8894; fill: none; stroke-width: 1.5; }
        marker path { fill: #7a8894; }
        .label { font-size: 11px; fill: #555; }
        #heading { font-weight: 600; margin: .5em 0; }
        #list { max-height: calc(100vh - 5em); overflow-y: auto; }
        #transcript { list-style: none; padding: 0; margin: 0; font: 13px/1.35 ui-monospace, monospace;
          max-height: calc(100vh - 19em); overflow-y: auto; border: 1px solid #ddd; background: #fff; }
        #transcript li { padding: .15em .3em; border-left: 3px solid transparent; }
        #transcript li .line { white-space: pre-wrap; word-break: break-all; }
        #transcript li .note { color: #666; font-family: system-ui, sans-serif; font-size: 12px; padding-left: 2.2em; }
        #transcript li.client { border-color: #1e6fd9; }
        #transcript li.client .line::before { content: "C: "; color: #1e6fd9; }
        #transcript li.server .line::before { content: "S: "; color: #2a8c4a; }
        #transcript li.gateway .line::before { content: "G: "; color: #8a4fd0; }
        #transcript li.server { border-color: #2a8c4a; }
        #transcript li.gateway { border-color: #8a4fd0; }
        #transcript li.anomaly { background: #fdecee; border-color: #b00020; }
        #transcript li.anomaly .line { color: #b00020; }
        #transcript li.state .line { color: #805b00; }
        #transcript li.meta .line { color: #555; }
        body.anomalies-only #transcript li:not(.anomaly) { display: none; }
        body.anomalies-only #sessions tr.clean { display: none; }
        #transcript li.hidden-step { display: none; }
        """#

    static let script = #"""
        "use strict";
        (function () {
          const token = new URLSearchParams(location.search).get("token");
          function api(path) {
            if (!token) return path;
            return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
          }
          const $ = (id) => document.getElementById(id);
          const sessions = new Map();
          let selected = null, paused = false, held = [], source = null;
          let missedBefore = 0, missedNow = 0, mode = "gateway", stepAt = -1, trimmed = 0;
          const KEPT = 5000;

          function el(tag, cls, text) {
            const node = document.createElement(tag);
            if (cls) node.className = cls;
            if (text !== undefined && text !== null) node.textContent = String(text);
            return node;
          }
          function status(text) { $("status").textContent = text; }
          function showMissed() {
            const total = missedBefore + missedNow;
            const box = $("missed");
            box.hidden = total === 0;
            box.textContent = "missed " + total + " event" + (total === 1 ? "" : "s") + " (this page fell behind)";
            box.dataset.missed = String(total);
          }
          function when(text) { return text ? text.substring(11, 19) : ""; }

          function row(s) {
            let tr = document.querySelector('#sessions tr[data-id="' + CSS.escape(s.id) + '"]');
            if (!tr) {
              tr = el("tr");
              tr.dataset.id = s.id;
              tr.addEventListener("click", () => follow(s.id));
              const body = $("sessions");
              body.insertBefore(tr, body.firstChild);
            }
            tr.replaceChildren(
              el("td", null, s.id), el("td", null, s.client || "?"), el("td", null, s.user || ""),
              el("td", "state", s.stateName), el("td", null, s.clientOctets), el("td", null, s.serverOctets),
              el("td", s.anomalies > 0 ? "bad" : null, s.anomalies), el("td", null, s.open ? "" : (s.ending || "closed"))
            );
            tr.lastChild.title = s.ending || "";
            tr.classList.toggle("open", s.open);
            tr.classList.toggle("clean", s.anomalies === 0);
            tr.classList.toggle("selected", s.id === selected);
            tr.dataset.state = s.state;
            tr.dataset.anomalies = String(s.anomalies);
          }
          function counts() {
            let open = 0;
            for (const s of sessions.values()) if (s.open) open++;
            $("counts").textContent = "(" + open + " open, " + (sessions.size - open) + " ended)";
          }
          function diagram(state) {
            const map = { "authorization": "authorization", "authorization-user-accepted": "authorization",
              "authorization-sasl": "authorization", "greeting": "authorization", "tls-negotiation": "tls",
              "encrypted": "tls", "transaction": "transaction", "update": "update", "closed": "closed" };
            for (const node of document.querySelectorAll("#diagram .node")) node.classList.remove("current");
            const id = map[state];
            if (id) $("state-" + id).classList.add("current");
            $("diagram").dataset.state = state || "";
          }
          function heading(s) {
            const parts = [s.id + ":", s.client || "?"];
            if (s.gateway) parts.push("→ gateway " + s.gateway);
            if (s.server) parts.push("→ " + s.server);
            if (s.user) parts.push("user " + s.user);
            parts.push("— " + s.stateName + (s.open ? "" : ", " + (s.ending || "closed")));
            $("heading").textContent = parts.join(" ");
          }
          function session(s) {
            sessions.set(s.id, s);
            row(s);
            counts();
            if (s.id === selected) { heading(s); diagram(s.state); }
          }
          function describe(r) {
            switch (r.kind) {
              case "command": return [r.side, r.text, r.note];
              case "sasl": return [r.side, r.text, r.note];
              case "reply": return [r.side, r.text, r.note];
              case "body": return ["meta", "[" + (r.verb || "") + " body: " + r.octets + " octets, " + r.lines + " lines" + (r.complete === false ? ", cut short" : "") + "]", r.note];
              case "state": return ["state", "→ " + r.state, r.note];
              case "note": return ["meta", "# " + (r.note || ""), null];
              case "anomaly": return ["anomaly", "! " + r.rule + " (" + r.severity + ", " + r.side + "): " + r.reason, null];
              case "closed": return ["meta", "[the " + r.side + " closed its side]", null];
              case "tls": return ["meta", "[TLS " + r.side + ": " + (r.text || "") + "]", r.note];
              case "opaque": return ["meta", "[" + r.octets + " octets from the " + r.side + " not read]", null];
              case "session-start":
                return ["meta", "── session " + r.session + ": " + [r.client, r.gateway && "gateway " + r.gateway, r.server].filter(Boolean).join(" → "), null];
              case "session-end": return ["meta", "── end: " + (r.note || ""), null];
              default: return ["meta", r.text || r.kind, r.note];
            }
          }
          function record(r) {
            if (r.session !== selected) return;
            const [cls, line, note] = describe(r);
            const li = el("li", cls);
            li.dataset.kind = r.kind;
            if (r.rule) li.dataset.rule = r.rule;
            li.appendChild(el("div", "line", line));
            if (note) li.appendChild(el("div", "note", note));
            li.title = r.time || "";
            $("transcript").appendChild(li);
            if (r.kind === "state" && sessions.has(r.session)) diagram(r.state);
            const box = $("transcript");
            if (mode === "capture") {
              if (stepAt >= 0 && box.children.length - 1 > stepAt) li.classList.add("hidden-step");
              stepCounter();
            } else {
              if (!paused) follow_bottom();
              if (box.children.length > KEPT) { box.firstChild.remove(); trimmed++; showTrimmed(); }
            }
          }
          // One scroll a frame, not one a line: a busy session brings thousands of lines a second.
          let scrolling = false;
          function follow_bottom() {
            if (scrolling) return;
            scrolling = true;
            requestAnimationFrame(() => { scrolling = false; const box = $("transcript"); box.scrollTop = box.scrollHeight; });
          }
          function showTrimmed() {
            const d = $("dropped");
            d.hidden = false;
            d.textContent = trimmed + " earlier lines are no longer shown (the page keeps the last " + KEPT + "); /api/sessions/" + selected + " has more";
          }
          function stepCounter() {
            const items = $("transcript").children;
            $("step-at").textContent = stepAt < 0 ? "" : "line " + (stepAt + 1) + " of " + items.length;
          }
          function applyStep() {
            const items = $("transcript").children;
            if (stepAt < 0) { for (const li of items) li.classList.remove("hidden-step"); stepCounter(); return; }
            for (let i = 0; i < items.length; i++) items[i].classList.toggle("hidden-step", i > stepAt);
            stepCounter();
            const last = items[Math.min(stepAt, items.length - 1)];
            if (last) { const box = $("transcript"); box.scrollTop = last.offsetTop - box.offsetTop - box.clientHeight / 2; }
          }
          function handle(kind, data) {
            if (kind === "session") session(data);
            else if (kind === "record") record(data);
            else if (kind === "dropped") { const d = $("dropped"); d.hidden = false; d.textContent = data.records + " earlier records of this session are no longer kept"; }
          }
          function receive(kind, data) {
            if (paused) { held.push([kind, data]); return; }
            handle(kind, data);
          }
          function connect() {
            if (source) source.close();
            missedBefore += missedNow; missedNow = 0;
            source = new EventSource(api("/api/stream" + (selected ? "?follow=" + encodeURIComponent(selected) : "")));
            for (const kind of ["session", "record", "dropped"]) {
              source.addEventListener(kind, (e) => receive(kind, JSON.parse(e.data)));
            }
            source.addEventListener("missed", (e) => { missedNow = JSON.parse(e.data).missed; showMissed(); });
            source.onopen = () => status(paused ? "paused" : "live");
            source.onerror = () => status("reconnecting…");
          }
          function follow(id) {
            selected = id;
            $("transcript").replaceChildren();
            $("dropped").hidden = true;
            trimmed = 0;
            stepAt = mode === "capture" ? 0 : -1;
            for (const tr of document.querySelectorAll("#sessions tr")) tr.classList.toggle("selected", tr.dataset.id === id);
            const s = sessions.get(id);
            if (s) { heading(s); diagram(s.state); }
            history.replaceState(null, "", "#" + encodeURIComponent(id));
            connect();
          }
          $("pause").addEventListener("click", () => {
            paused = !paused;
            $("pause").textContent = paused ? "Resume" : "Pause";
            status(paused ? "paused" : "live");
            if (!paused) { const batch = held; held = []; for (const [k, d] of batch) handle(k, d); }
          });
          $("anomalies-only").addEventListener("change", (e) => document.body.classList.toggle("anomalies-only", e.target.checked));
          $("step").addEventListener("click", () => { stepAt = Math.min(stepAt + 1, $("transcript").children.length - 1); applyStep(); });
          $("step-back").addEventListener("click", () => { stepAt = Math.max(stepAt - 1, 0); applyStep(); });
          $("step-all").addEventListener("click", () => { stepAt = -1; applyStep(); });
          fetch(api("/api/sessions")).then((r) => r.json()).then((body) => {
            mode = body.mode;
            $("mode").textContent = mode;
            $("steps").hidden = mode !== "capture";
            for (const s of body.sessions.slice().reverse()) session(s);
            const wanted = decodeURIComponent(location.hash.substring(1));
            if (wanted && sessions.has(wanted)) follow(wanted); else connect();
          }).catch(() => { status("cannot reach the gateway"); connect(); });
        })();
        """#
}
