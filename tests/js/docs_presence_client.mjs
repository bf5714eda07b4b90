// Presence and a shared document from a stock socket.io-client and Yjs,
// with nothing but the wire protocol in hand (what a browser front-end does).
//
//   node docs_presence_client.mjs URL TOKEN ROOM DOC
//
// Joins ROOM, syncs DOC with the Yjs sync steps, writes state.js = "hello"
// and some text, waits until a Python client wrote state.py, then prints a
// JSON summary on stdout and exits.
import { io } from "socket.io-client";
import * as Y from "yjs";

const [url, token, room, docName] = process.argv.slice(2);
const fail = (msg) => { console.error(msg); process.exit(1); };
setTimeout(() => fail("timed out"), 30_000).unref();

const socket = io(`${url}/rtkit`, { auth: { token }, transports: ["websocket"] });
const ydoc = new Y.Doc();
const state = ydoc.getMap("state");
const text = ydoc.getText("text");
const REMOTE = Symbol("hub");
const members = new Map();
const presenceEvents = [];

const check = (ack, what) => {
  if (!ack || ack.ok !== true) fail(`${what} failed: ${JSON.stringify(ack)}`);
  return ack;
};

socket.on("presence", ({ room: r, event, member }) => {
  if (r !== room) return;
  presenceEvents.push([event, member.user]);
  if (event === "leave") members.delete(member.id); else members.set(member.id, member);
});
socket.on("doc.update", ({ doc, update }) => {
  if (doc === docName) Y.applyUpdate(ydoc, new Uint8Array(update), REMOTE);
});
ydoc.on("update", (update, origin) => {
  if (origin === REMOTE || !socket.connected) return;
  socket.emitWithAck("doc.update", { doc: docName, update }).then((ack) => check(ack, "doc.update"));
});

socket.on("connect_error", (err) => fail(`connect_error: ${err.message}`));
socket.on("connect", async () => {
  const joined = check(
    await socket.emitWithAck("presence.join", { room, state: { from: "js" } }),
    "presence.join",
  );
  for (const m of joined.members) members.set(m.id, m);

  const ack = check(
    await socket.emitWithAck("doc.sync", { doc: docName, state_vector: Y.encodeStateVector(ydoc) }),
    "doc.sync",
  );
  Y.applyUpdate(ydoc, new Uint8Array(ack.update), REMOTE);
  const mine = Y.encodeStateAsUpdate(ydoc, new Uint8Array(ack.state_vector));
  check(await socket.emitWithAck("doc.update", { doc: docName, update: mine }), "doc.update");

  ydoc.transact(() => {
    state.set("js", "hello");
    text.insert(0, "from js;");
  });
  const done = () => {
    if (!state.has("py")) return false;
    console.log(JSON.stringify({
      me: joined.member,
      members: [...members.values()].map((m) => ({ user: m.user, state: m.state })),
      presenceEvents,
      state: state.toJSON(),
      text: text.toString(),
    }));
    socket.close();
    process.exit(0);
  };
  if (!done()) state.observe(done);
});
