// The page at GET / (docs/page.md): the gateway's feed, the trending list and an hls.js player.
// Everything shown comes from the network, so it is set as text, never as HTML.
// Nothing is loaded before the age gate passes (docs/trust-and-safety.md): the page first shows the
// "I am 18 or older" gate, gets an age token from POST /v1/age-gate (or a provider's check where the
// jurisdiction requires one) and only then loads the catalog, trending and the gateway.
"use strict";

(() => {
  const GATEWAY_URL = document.querySelector('meta[name="lustrax:gateway"]').content;
  const params = new URLSearchParams(location.hash.slice(1));
  // A token in the fragment (never sent to a server) lets the page follow like counts on
  // video:{id} channels; without one it is an anonymous client of the feed.
  const TOKEN = params.get("token");
  const TRENDING_POLL_MS = 5000;
  const MAX_FEED = 50;
  const MAX_FRAMES = 30;
  const AGE_SESSION_KEY = "lustrax_age_session"; // a provider session awaiting its token (sessionStorage)
  let ageToken = null; // from the age gate: sent as X-Age-Token and ?age_token= (the cookie too)

  const $ = (id) => document.getElementById(id);
  const resume = {}; // channel -> {seq, epoch}: where to resume after a reconnect
  const videos = new Map(); // video_id -> the latest record seen (catalog, new_video or trending)
  let socket = null;
  let retryMs = 500;
  let hls = null;

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  function setPlayerStatus(state, text) {
    $("player-status").dataset.state = state;
    $("player-status").textContent = text;
  }

  function videoItem(video, fresh) {
    const item = element("li", undefined, fresh ? "fresh" : "");
    item.dataset.videoId = video.video_id;
    const button = element("button", video.title || video.video_id);
    button.type = "button";
    button.addEventListener("click", () => play(video.video_id));
    item.append(button);
    if (video.premium) item.append(element("span", "premium", "meta"));
    if (video.published_at) item.append(element("span", new Date(video.published_at).toLocaleString(), "meta"));
    return item;
  }

  function addToFeed(video, fresh) {
    videos.set(video.video_id, { ...videos.get(video.video_id), ...video });
    const feed = $("feed");
    const existing = feed.querySelector(`li[data-video-id="${CSS.escape(video.video_id)}"]`);
    if (existing) existing.remove();
    feed.prepend(videoItem(video, fresh));
    while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
  }

  function logFrame(frame) {
    const frames = $("frames");
    const line = element("li", `${frame.type} ${frame.channel || ""} seq ${frame.seq ?? "-"} `
      + JSON.stringify(frame.data ?? {}));
    line.dataset.type = frame.type;
    if (frame.data && frame.data.video_id) line.dataset.videoId = frame.data.video_id;
    frames.prepend(line);
    while (frames.children.length > MAX_FRAMES) frames.lastElementChild.remove();
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json", "X-Age-Token": ageToken } });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function loadFeed() {
    const body = await getJson("/v1/videos?state=published&limit=20");
    $("feed").replaceChildren();
    for (const video of body.items.reverse()) addToFeed(video, false);
  }

  // -- the gateway ------------------------------------------------------------------------------
  function subscribe(channels) {
    if (!socket || socket.readyState !== WebSocket.OPEN || channels.length === 0) return;
    const since = {};
    for (const channel of channels) if (resume[channel]) since[channel] = resume[channel];
    socket.send(JSON.stringify({ op: "subscribe", channels, since }));
  }

  function connect() {
    const query = new URLSearchParams({ age_token: ageToken });
    if (TOKEN) query.set("token", TOKEN);
    const url = `${GATEWAY_URL}?${query}`;
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      retryMs = 500;
      setStatus("live", TOKEN ? "live (signed in)" : "live (anonymous feed)");
      subscribe(["feed"]);
      if (TOKEN) subscribe([...$("trending").querySelectorAll("li")].map((li) => `video:${li.dataset.videoId}`));
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      onFrame(frame);
    });
    socket.addEventListener("close", () => {
      setStatus("reconnecting", `gateway connection lost; retrying in ${retryMs / 1000} s`);
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    });
  }

  function onFrame(frame) {
    if (frame.type === "pong") return;
    logFrame(frame);
    if (frame.channel && typeof frame.seq === "number") {
      resume[frame.channel] = { seq: frame.seq, epoch: frame.epoch ?? resume[frame.channel]?.epoch };
    }
    if (frame.type === "subscribed" && frame.epoch !== undefined) {
      resume[frame.channel] = { seq: frame.seq, epoch: frame.epoch };
    } else if (frame.type === "reset" && frame.channel === "feed") {
      loadFeed().catch((error) => setStatus("reconnecting", String(error)));
    } else if (frame.type === "new_video") {
      addToFeed(frame.data, true);
    } else if (frame.type === "like_update") {
      const item = $("trending").querySelector(`li[data-video-id="${CSS.escape(frame.data.video_id)}"] .likes`);
      if (item) item.textContent = `${frame.data.like_count} likes`;
    } else if (frame.type === "video_removed") {
      for (const list of [$("feed"), $("trending")]) {
        list.querySelector(`li[data-video-id="${CSS.escape(frame.data.video_id)}"]`)?.remove();
      }
    }
  }

  // -- trending -----------------------------------------------------------------------------------
  async function refreshTrending() {
    try {
      const body = await getJson("/v1/trending?minutes=60&limit=10");
      const list = $("trending");
      const before = new Set([...list.querySelectorAll("li")].map((li) => li.dataset.videoId));
      list.replaceChildren();
      for (const video of body.items) {
        videos.set(video.video_id, { ...videos.get(video.video_id), ...video });
        const item = videoItem(video, false);
        item.append(element("span", `${video.views} views`, "meta views"),
          element("span", `${video.net_likes} likes`, "meta likes"));
        list.append(item);
      }
      if (TOKEN) subscribe(body.items.map((v) => `video:${v.video_id}`).filter((c) => !before.has(c.slice(6))));
    } catch (error) {
      $("trending").replaceChildren(element("li", `trending unavailable: ${error.message}`, "meta"));
    }
  }

  // -- the player -------------------------------------------------------------------------------
  async function play(videoId) {
    let video = videos.get(videoId);
    if (!video || !video.video_url) {
      try { video = await getJson(`/v1/videos/${encodeURIComponent(videoId)}`); } catch (error) {
        setPlayerStatus("error", `cannot load ${videoId}: ${error.message}`);
        return;
      }
    }
    if (!video.video_url) { setPlayerStatus("error", `${videoId} is not published`); return; }
    if (video.premium) { setPlayerStatus("error", "premium videos need signed cookies (POST /v1/videos/{id}/playback)"); return; }
    $("now-playing").textContent = video.title || videoId;
    const player = $("player");
    player.dataset.videoId = videoId;
    if (hls) { hls.destroy(); hls = null; }
    setPlayerStatus("loading", `loading ${video.video_url}`);
    if (window.Hls && Hls.isSupported()) {
      // No worker: the page's CSP allows no blob: scripts.
      hls = new Hls({ enableWorker: false });
      hls.on(Hls.Events.ERROR, (_, data) => {
        if (data.fatal) setPlayerStatus("error", `playback error: ${data.type} ${data.details}`);
      });
      hls.loadSource(video.video_url);
      hls.attachMedia(player);
    } else if (player.canPlayType("application/vnd.apple.mpegurl")) {
      player.src = video.video_url; // Safari plays HLS natively
    } else {
      setPlayerStatus("error", "this browser has neither Media Source Extensions nor native HLS");
      return;
    }
    player.play().catch(() => setPlayerStatus("paused", "press play"));
  }

  $("player").addEventListener("playing", () => setPlayerStatus("playing", "playing"));
  $("player").addEventListener("ended", () => setPlayerStatus("ended", "ended"));
  $("player").addEventListener("error", () => setPlayerStatus("error", `media error ${$("player").error?.code}`));

  // -- the age gate: first, and nothing else until it passes ------------------------------------
  function setGateStatus(state, text) {
    $("age-gate-status").dataset.state = state;
    $("age-gate-status").textContent = text;
  }

  async function postJson(path, body) {
    const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await response.json().catch(() => ({}));
    return { status: response.status, body: answer };
  }

  function start() {
    $("age-gate").hidden = true;
    $("content").hidden = false;
    setStatus("connecting", "connecting to the gateway");
    loadFeed().catch((error) => setStatus("reconnecting", String(error))).finally(() => {
      connect();
      refreshTrending();
      setInterval(refreshTrending, TRENDING_POLL_MS);
      if (params.get("video")) play(params.get("video"));
    });
  }

  function passed(answer) {
    if (answer.status !== 200) return false;
    ageToken = answer.body.age_token;
    start();
    return true;
  }

  async function declare() {
    $("age-gate-confirm").disabled = true;
    const answer = await postJson("/v1/age-gate", { method: "self_declaration", confirm_over_18: true });
    if (passed(answer)) return;
    $("age-gate-confirm").disabled = false;
    const error = answer.body.error || {};
    if (error.code === "method_not_accepted") {
      setGateStatus("error", "Where you are, the law requires a stronger age check.");
      $("age-gate-provider").hidden = false;
    } else {
      setGateStatus("error", `the age gate answered ${answer.status}: ${error.message || ""}`);
    }
  }

  async function verifyWithProvider() {
    const answer = await postJson("/v1/age-gate/sessions", { provider: "yoti" });
    if (answer.status !== 201) {
      setGateStatus("error", `no age check available: ${(answer.body.error || {}).message || answer.status}`);
      return;
    }
    sessionStorage.setItem(AGE_SESSION_KEY, answer.body.session_id);
    location.assign(answer.body.redirect_url); // the provider's page; it sends the user back here
  }

  async function exchange(sessionId, attempt) {
    const answer = await postJson(`/v1/age-gate/sessions/${encodeURIComponent(sessionId)}/token`);
    if (passed(answer)) { sessionStorage.removeItem(AGE_SESSION_KEY); return; }
    if (answer.status === 409 && attempt < 5) { setTimeout(() => exchange(sessionId, attempt + 1), 2000); return; }
    sessionStorage.removeItem(AGE_SESSION_KEY);
    setGateStatus("error", `the age check did not pass: ${(answer.body.error || {}).message || answer.status}`);
  }

  $("age-gate-confirm").addEventListener("click", declare);
  $("age-gate-provider").addEventListener("click", verifyWithProvider);
  const returning = sessionStorage.getItem(AGE_SESSION_KEY);
  if (returning && new URLSearchParams(location.search).get("age_gate")) exchange(returning, 0);
})();
