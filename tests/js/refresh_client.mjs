// A stock socket.io-client refreshing its token on a live connection with
// nothing but DESIGN.md / the README's wire protocol in hand: `auth.refresh`
// with another user's token (forbidden), a bad one (unauthorized), then a
// fresh one with fewer grants (a `revoked` event before the ack), and the
// connection outliving its first token.
//
//   node refresh_client.mjs URL KEEP_CHANNEL LOSE_CHANNEL
//
// Tokens come from RTKIT_TOKEN (the first, short), RTKIT_FRESH_TOKEN (same
// user, only KEEP_CHANNEL) and RTKIT_OTHER_TOKEN (another user);
// RTKIT_OUTLIVE_MS is how long to stay connected after refreshing. Prints
// one JSON summary; test_js_client.py asserts on it.

import { io } from "socket.io-client";

const [url, keep, lose] = process.argv.slice(2);
const NAMESPACE = "/rtkit";
const TIMEOUT_MS = 10_000;
const summary = { events: [] };

const socket = io(`${url}${NAMESPACE}`, {
  path: "/socket.io/",
  transports: ["websocket"],
  auth: { token: process.env.RTKIT_TOKEN },
  reconnection: false,
  timeout: TIMEOUT_MS,
});
const request = (event, payload) => socket.timeout(TIMEOUT_MS).emitWithAck(event, payload);
const received = { [keep]: [], [lose]: [] };

socket.on("messages", (batch) => {
  for (const m of batch) received[m.channel]?.push(m.seq);
});
socket.on("revoked", (body) => summary.events.push({ event: "revoked", body }));
socket.on("closing", (body) => summary.events.push({ event: "closing", body }));
socket.on("disconnect", (reason) => summary.events.push({ event: "disconnect", reason }));

async function main() {
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  for (const channel of [keep, lose]) {
    const ack = await request("subscribe", { channel });
    if (!ack.ok) throw new Error(`subscribe ${channel}: ${JSON.stringify(ack)}`);
  }
  summary.other = await request("auth.refresh", { token: process.env.RTKIT_OTHER_TOKEN });
  summary.bad = await request("auth.refresh", { token: "not-a-token" });
  const ack = await request("auth.refresh", { token: process.env.RTKIT_FRESH_TOKEN });
  summary.events.push({ event: "ack", body: ack });
  socket.auth.token = process.env.RTKIT_FRESH_TOKEN; // what a reconnect would send
  summary.resubscribe = await request("subscribe", { channel: lose });

  // Past the first token's expiry: still connected, still receiving.
  await new Promise((resolve) => setTimeout(resolve, Number(process.env.RTKIT_OUTLIVE_MS)));
  const lost = await request("publish", { channel: lose, data: "not for me" });
  const kept = await request("publish", { channel: keep, data: "still here" });
  const deadline = Date.now() + TIMEOUT_MS;
  while (!received[keep].includes(kept.seq) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  summary.connected = socket.connected;
  summary.published = { lost: lost.ok, kept: kept.seq };
  summary.received = received;
}

main()
  .catch((err) => {
    summary.fatal = String(err?.stack ?? err);
    process.exitCode = 1;
  })
  .finally(() => {
    socket.off("disconnect"); // our own close is not news
    socket.close();
    console.log(JSON.stringify(summary));
  });
