// Enqueue a wasmq task through `wasmq serve`'s API and wait for its result (Node 18+, fetch).
//
//   node enqueue.mjs http://127.0.0.1:8080 MODULE INPUT [QUEUE]
// WASMQ_TOKEN in the environment is sent as the bearer token.
const [base, module, input, queue = "default"] = process.argv.slice(2);
const headers = { "Content-Type": "application/json" };
if (process.env.WASMQ_TOKEN) headers.Authorization = `Bearer ${process.env.WASMQ_TOKEN}`;

const r = await fetch(`${base}/v1/queues/${queue}/tasks`, { method: "POST", headers, body: JSON.stringify({ module, input }) });
if (!r.ok) throw new Error(`enqueue: ${r.status} ${await r.text()}`);
const { id } = await r.json();
// Long-poll: the server answers as soon as the task finishes (or after 30 s).
let t;
for (let i = 0; i < 10; i++) {
  t = await (await fetch(`${base}/v1/tasks/${id}?wait=30s`, { headers })).json();
  if (["succeeded", "dead", "cancelled"].includes(t.state)) break;
}
if (t.state !== "succeeded") {
  console.error(`task ${id} ended ${t.state}: ${t.error}`);
  process.exit(1);
}
console.log(t.output_text ?? t.output_base64);
