// The prototype front end's components/RealTimeFeed.js logic, run by the integration tests against
// the gateway's Socket.IO endpoint with the real socket.io-client.
//   node feed.js URL '{"auth": {...}, "transports": [...], "subscribe": [CHANNEL, ...], "emit": [[EVENT, ARG], ...]}'
// Prints the seed's own line for every new_video, and one JSON line per thing the client sees.
// Exits when its stdin closes.
const { io } = require("socket.io-client");

const [url, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");

// With "resume", every (re)connection asks for the feed after the last seq seen (auth.since): the
// gateway's own recovery, which socket.io-client re-evaluates on each reconnection attempt.
let feedSeq = null;
const auth = options.resume
  ? (cb) => cb({ ...(options.auth || {}), ...(feedSeq !== null ? { since: feedSeq } : {}) })
  : options.auth;
const socket = io(url, {
  ...(auth ? { auth } : {}),
  ...(options.transports ? { transports: options.transports } : {}),
  ...(options.io || {}),
});
// The seed, as written:
socket.on('new_video', (data) => console.log("New video dropped:", data.title));

socket.onAny((event, ...args) => {
  const where = event === "subscribed" ? args[0] : args[1];  // subscribed {channel, seq}; events (data, {channel, seq})
  if (where && where.channel === "feed" && typeof where.seq === "number" && (feedSeq === null || where.seq > feedSeq)) {
    feedSeq = where.seq;
  }
  out({ event, args });
});
socket.on("connect", () => {
  out({ event: "connect", transport: socket.io.engine.transport.name });
  for (const [name, payload] of options.emit || []) socket.emit(name, payload);
  if (options.subscribe) {
    socket.emitWithAck("subscribe", { channels: options.subscribe })
      .then((replies) => out({ event: "ack", args: [replies] }));
  }
});
socket.on("connect_error", (err) => out({ event: "connect_error", message: err.message, data: err.data ?? null }));
socket.on("disconnect", (reason) => out({ event: "disconnect", reason }));
socket.io.on("open", () => {
  out({ event: "open", transport: socket.io.engine.transport.name });
  socket.io.engine.once("upgrade", (transport) => out({ event: "upgrade", transport: transport.name }));
});
socket.io.on("reconnect_attempt", (attempt) => out({ event: "reconnect_attempt", attempt }));

process.stdin.on("end", () => { socket.close(); process.exit(0); });
process.stdin.resume();
