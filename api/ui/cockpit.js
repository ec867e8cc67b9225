// The cockpit: replay control over /admin/replay, a user's live top 10 over
// /recommend/stream, their interests from /cockpit/user, trending and health.
// Plain browser JavaScript, no build step; uPlot (vendored) draws the chart.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4",
    "#cf222e", "#6e7781", "#e16f24", "#2da44e", "#a475f9", "#57606a"];
  const state = {
    logs: [], replay: null, dragging: false,
    // A seek shows its target until the replay has sent something after it.
    pendingSeek: null,
    user: null, stream: null, requestId: null, ranks: new Map(),
    times: [], shares: [], categories: [], chart: null,
  };

  const iso = (ms) => new Date(ms).toISOString().replace(/:\d\d\.\d+Z$/, "Z").replace("T", " ");
  const fmt = (x, digits = 0) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

  async function getJSON(url, options) {
    const response = await fetch(url, options);
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    }
    return response.json();
  }

  // ---- replay -------------------------------------------------------------------------

  function apiKey() { return $("api-key").value.trim(); }

  async function admin(path, body) {
    return getJSON(`/admin/replay${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { "content-type": "application/json", "X-API-Key": apiKey() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function speedValue() {
    const value = $("replay-speed").value;
    return value === "max" ? "max" : Number(value);
  }

  function selectedLog() { return state.logs.find((l) => l.source === $("replay-source").value); }

  function setSliderRange(log) {
    const slider = $("replay-slider");
    slider.min = String(log.first_ms);
    slider.max = String(log.last_ms);
    slider.step = String(60_000);
    slider.setAttribute("aria-valuetext", iso(Number(slider.value)));
    if (!state.replay || state.replay.state === "idle") slider.value = String(log.first_ms);
    showPosition(Number(slider.value));
  }

  function showPosition(ms) {
    $("replay-position").value = iso(ms);
    $("replay-slider").setAttribute("aria-valuetext", iso(ms));
  }

  const LIVE = new Set(["running", "paused"]);

  function showReplay(replay) {
    state.replay = replay;
    const live = LIVE.has(replay.state);
    $("replay-play").textContent = replay.state === "running" ? "Pause" : replay.state === "paused" ? "Resume" : "Play";
    $("replay-play").setAttribute("aria-pressed", String(replay.state === "running"));
    const seek = state.pendingSeek;
    if (seek && (!live || replay.run_id !== seek.runId || replay.events_sent > seek.sent)) state.pendingSeek = null;
    if (replay.position_ms !== null && !state.dragging && !state.pendingSeek) {
      $("replay-slider").value = String(replay.position_ms);
      showPosition(replay.position_ms);
    }
    const lag = replay.lag_ms === null ? "" : `, ${fmt(replay.lag_ms / 1000, 1)} s behind pace`;
    const error = replay.error ? ` — ${replay.error}` : "";
    $("replay-status").textContent = replay.state === "idle"
      ? "no replay running"
      : `${replay.state}: ${replay.events_sent.toLocaleString()} events sent, ${fmt(replay.rate)} ev/s, speed ${replay.speed}${replay.state === "running" ? lag : ""}${error}`;
    $("replay").dataset.state = replay.state;
  }

  function replayError(error) { $("replay-status").textContent = `replay: ${error.message}`; }

  async function pollReplay() {
    if (!apiKey()) return;
    try { showReplay(await admin("")); } catch (error) { replayError(error); }
  }

  async function playPause() {
    const current = state.replay ? state.replay.state : "idle";
    try {
      if (current === "running") showReplay(await admin("/pause", {}));
      else if (current === "paused") showReplay(await admin("/resume", {}));
      else {
        const log = selectedLog();
        const since = Number($("replay-slider").value);
        showReplay(await admin("", {
          source: log.source,
          speed: speedValue(),
          since: since > log.first_ms ? since / 1000 : null,
          rebase_now: $("replay-rebase").checked,
        }));
      }
    } catch (error) { replayError(error); }
  }

  async function stopReplay() {
    if (!state.replay || !LIVE.has(state.replay.state)) return;
    try { showReplay(await admin("/stop", {})); } catch (error) { replayError(error); }
  }

  async function changeSpeed() {
    if (!state.replay || !LIVE.has(state.replay.state)) return;
    try { showReplay(await admin("/speed", { speed: speedValue() })); } catch (error) { replayError(error); }
  }

  async function seek() {
    state.dragging = false;
    const target = Number($("replay-slider").value);
    showPosition(target);
    if (!state.replay || !LIVE.has(state.replay.state)) return; // the next Play starts here
    state.pendingSeek = { runId: state.replay.run_id, sent: state.replay.events_sent };
    try { showReplay(await admin("/seek", { to: target / 1000 })); }
    catch (error) { state.pendingSeek = null; replayError(error); }
  }

  async function loadLogs() {
    state.logs = await getJSON("/cockpit/logs");
    const select = $("replay-source");
    select.replaceChildren(...state.logs.map((log) => new Option(`${log.source} (${log.events.toLocaleString()} events)`, log.source)));
    if (state.logs.length) setSliderRange(state.logs[0]);
    else $("replay-status").textContent = "no prepared log: run `streamrec data prepare`";
  }

  // ---- the user's live list -----------------------------------------------------------

  function watch(userId) {
    userId = userId.trim();
    if (!userId) return;
    if (state.stream) state.stream.close();
    state.user = userId;
    state.ranks = new Map();
    state.times = []; state.shares = []; state.categories = [];
    $("recs").replaceChildren();
    $("user-search").value = userId;
    $("list-meta").textContent = `connecting to ${userId}'s stream…`;
    const params = new URLSearchParams({ user_id: userId, k: "10" });
    history.replaceState(null, "", `/ui?user=${encodeURIComponent(userId)}`);
    const stream = new EventSource(`/recommend/stream?${params}`);
    stream.addEventListener("recommendations", (event) => {
      if (state.stream !== stream) return;
      showList(JSON.parse(event.data));
      loadUser(userId);
    });
    stream.onerror = () => {
      if (state.stream === stream) $("list-meta").textContent = "stream interrupted; reconnecting…";
    };
    state.stream = stream;
  }

  function showList(answer) {
    const list = $("recs");
    const previous = state.ranks;
    const first = previous.size === 0;
    const items = answer.items.map((item) => {
      const li = document.createElement("li");
      const before = previous.get(item.item_id);
      let move = "";
      if (!first && before === undefined) { li.className = "new"; move = "new"; }
      else if (before !== undefined && before > item.rank) { li.className = "up"; move = `▲${before - item.rank}`; }
      else if (before !== undefined && before < item.rank) { li.className = "down"; move = `▼${item.rank - before}`; }
      li.dataset.itemId = item.item_id;
      const rank = document.createElement("span");
      rank.className = "rank"; rank.textContent = item.rank;
      const name = document.createElement("span");
      const button = document.createElement("button");
      button.type = "button"; button.className = "item";
      button.textContent = item.title || item.item_id;
      button.setAttribute("aria-label", `click ${item.title || item.item_id} as ${answer.user_id}`);
      button.addEventListener("click", () => clickItem(answer, item));
      name.append(button);
      if (item.category) name.append(tag(item.category));
      if (item.stage) name.append(tag(item.stage));
      if (move) { const m = document.createElement("span"); m.className = "move"; m.textContent = move; name.append(m); }
      const score = document.createElement("span");
      score.className = "score"; score.textContent = fmt(item.score, 3);
      const why = document.createElement("span");
      why.className = "why"; why.textContent = item.reason;
      li.append(rank, name, score, why);
      return li;
    });
    list.replaceChildren(...items);
    list.dataset.requestId = answer.request_id;
    list.dataset.updates = String(Number(list.dataset.updates || 0) + 1);
    state.requestId = answer.request_id;
    state.ranks = new Map(answer.items.map((item) => [item.item_id, item.rank]));
    $("list-meta").textContent = `${answer.user_id}: ${answer.items.length} items from ${answer.model_version}, at ${new Date().toLocaleTimeString()}`;
  }

  function tag(text) {
    const span = document.createElement("span");
    span.className = "tag"; span.textContent = text;
    return span;
  }

  async function clickItem(answer, item) {
    try {
      await getJSON("/events", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          user_id: answer.user_id, item_id: item.item_id, action: "click",
          request_id: answer.request_id, rank: item.rank,
        }),
      });
      $("list-meta").textContent = `clicked ${item.title || item.item_id} (list ${answer.request_id.slice(0, 8)}); waiting for the list to follow…`;
    } catch (error) {
      $("list-meta").textContent = `click not sent: ${error.message}`;
    }
  }

  // ---- interests ----------------------------------------------------------------------

  async function loadUser(userId) {
    let user;
    try { user = await getJSON(`/cockpit/user?${new URLSearchParams({ user_id: userId })}`); }
    catch (error) { $("recent").replaceChildren(note(`user features unavailable: ${error.message}`)); return; }
    if (state.user !== userId) return;
    showRecent(user);
    showLongInterests(user);
    addInterestPoint(user.interests);
  }

  function showLongInterests(user) {
    const names = Object.keys(user.interests_long);
    const el = $("interests-long");
    if (names.length === 0) { el.textContent = "long-window interests: none yet (the Spark job has no window for this user)"; return; }
    const end = new Date(user.interests_long_window_end).toISOString().slice(0, 16).replace("T", " ");
    el.textContent = `long-window interests (Spark, window ending ${end}): ${names.map((n) => `${n} ${Math.round(user.interests_long[n] * 100)}%`).join(", ")}`;
  }

  function note(text) { const li = document.createElement("li"); li.className = "muted"; li.textContent = text; return li; }

  function showRecent(user) {
    if (!user.known) { $("recent").replaceChildren(note("no events yet: a new user")); return; }
    $("recent").replaceChildren(...user.recent.slice(0, 10).map((item) => {
      const li = document.createElement("li");
      li.textContent = `${item.title || item.item_id}${item.categories.length ? ` (${item.categories.join(", ")})` : ""}`;
      return li;
    }));
  }

  function addInterestPoint(interests) {
    const names = Object.keys(interests);
    let grew = false;
    for (const name of names) {
      if (!state.categories.includes(name)) { state.categories.push(name); state.shares.push(state.times.map(() => 0)); grew = true; }
    }
    state.times.push(Date.now() / 1000);
    state.categories.forEach((name, i) => state.shares[i].push(interests[name] || 0));
    const chart = $("interest-chart");
    chart.dataset.points = String(state.times.length);
    chart.dataset.top = names[0] || "";
    chart.setAttribute("aria-label", `Category shares of ${state.user}'s recent items: ${names.slice(0, 5).map((n) => `${n} ${Math.round(interests[n] * 100)}%`).join(", ") || "none yet"}`);
    drawChart(grew || !state.chart);
  }

  function clockTime(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function chartWidth() { return Math.max(260, $("interest-chart").clientWidth); }

  function drawChart(rebuild) {
    const el = $("interest-chart");
    const data = [state.times, ...state.shares];
    if (typeof uPlot === "undefined") { el.textContent = "chart library missing: run `make install-ui`"; return; }
    if (state.categories.length === 0) { el.textContent = "no interests yet: the user has no events"; return; }
    if (rebuild || !state.chart) {
      if (state.chart) state.chart.destroy();
      el.replaceChildren();
      state.chart = new uPlot({
        width: chartWidth(), height: 220,
        // From the first point to the newest, at least a minute: uPlot's own range for one
        // point spans years.
        scales: { x: { range: () => { const newest = state.times[state.times.length - 1]; return [Math.min(state.times[0], newest - 60), newest + 1]; } }, y: { range: [0, 1] } },
        // Clock times on one row: uPlot's two-row default wrote overlapping dates over a minute.
        axes: [{ space: 70, values: (_, ticks) => ticks.map(clockTime) },
          { values: (_, ticks) => ticks.map((t) => `${Math.round(t * 100)}%`) }],
        series: [{}, ...state.categories.map((name, i) => ({
          label: name, stroke: COLORS[i % COLORS.length], width: 2, points: { show: state.times.length < 3 },
        }))],
        legend: { live: false },
      }, data, el);
    } else {
      state.chart.setData(data);
    }
  }

  // ---- trending and health ------------------------------------------------------------

  async function loadTrending() {
    try {
      const items = await getJSON("/cockpit/trending?k=10");
      $("trending-list").replaceChildren(...(items.length ? items.map((item) => {
        const li = document.createElement("li");
        const spark = item.spark_1h === null ? "" : `, Spark window ${fmt(item.spark_1h, 0)}`;
        li.textContent = `${item.title || item.item_id} — ${fmt(item.last_hour, 1)} in the last hour${spark}`;
        return li;
      }) : [note("nothing folded yet")]));
    } catch (error) { $("trending-list").replaceChildren(note(error.message)); }
  }

  async function loadHealth() {
    try {
      const health = await getJSON("/cockpit/health");
      $("health-model").textContent = `${health.model_version} (${health.stage})`;
      $("health-lag").textContent = health.worker_lag === null ? "–" : health.worker_lag.toLocaleString();
      $("health-rate").textContent = fmt(health.events_per_second);
      const seconds = (value) => value === null ? "not measured" : `${fmt(value, 2)} s`;
      $("health-freshness").textContent = `${seconds(health.freshness_p95_seconds)} to features, ${seconds(health.sse_update_p95_seconds)} to the stream`;
      $("health-sse").textContent = String(health.sse_clients);
    } catch (error) { $("health-model").textContent = `unavailable (${error.message})`; }
  }

  // ---- wiring ---------------------------------------------------------------------------

  let searchTimer = null;
  async function suggestUsers() {
    const q = $("user-search").value.trim();
    try {
      const { users } = await getJSON(`/cockpit/users?${new URLSearchParams({ q, limit: "20" })}`);
      $("user-options").replaceChildren(...users.map((u) => new Option(u, u)));
    } catch (_) { /* suggestions are a convenience */ }
  }

  async function randomUser() {
    try { watch((await getJSON("/cockpit/users/random")).user_id); }
    catch (error) { $("list-meta").textContent = `no user: ${error.message}`; }
  }

  function start() {
    const key = sessionStorage.getItem("streamrec-api-key");
    if (key) $("api-key").value = key;
    $("api-key").addEventListener("change", () => { sessionStorage.setItem("streamrec-api-key", apiKey()); pollReplay(); });
    $("replay-play").addEventListener("click", playPause);
    $("replay-stop").addEventListener("click", stopReplay);
    $("replay-speed").addEventListener("change", changeSpeed);
    $("replay-source").addEventListener("change", () => { const log = selectedLog(); if (log) setSliderRange(log); });
    const slider = $("replay-slider");
    slider.addEventListener("input", () => { state.dragging = true; showPosition(Number(slider.value)); });
    slider.addEventListener("change", seek);
    $("user-form").addEventListener("submit", (event) => { event.preventDefault(); watch($("user-search").value); });
    $("user-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(suggestUsers, 200); });
    $("user-random").addEventListener("click", randomUser);
    // The chart follows its box, whatever resized it (window, rotation, the grid going to one
    // column); a window "resize" listener alone can fire after the first layout at the new size.
    new ResizeObserver(() => {
      if (state.chart && state.chart.width !== chartWidth()) state.chart.setSize({ width: chartWidth(), height: 220 });
    }).observe($("interest-chart"));
    loadLogs().catch((error) => { $("replay-status").textContent = `logs: ${error.message}`; });
    loadHealth(); loadTrending(); pollReplay();
    setInterval(pollReplay, 700);
    setInterval(loadHealth, 3000);
    setInterval(loadTrending, 5000);
    const preset = new URLSearchParams(location.search).get("user");
    if (preset) watch(preset);
  }

  start();
})();
