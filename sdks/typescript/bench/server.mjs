// `node bench/server.mjs bare|sdk PORT`: one function answering {"ok":true,"attempt":N}, either
// as a bare node:http handler (reads the body, answers JSON) or through the SDK's adapter.
import http from 'node:http';
import { createHandler } from '../src/index.js';

const [mode, port] = process.argv.slice(2);
const bare = (/** @type {http.IncomingMessage} */ req, /** @type {http.ServerResponse} */ res) => {
  /** @type {Buffer[]} */
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const body = JSON.stringify({ ok: true, attempt: Number(req.headers['keel-attempt'] ?? 1) });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
};
const sdk = createHandler((req) => {
  req.json();
  return { ok: true, attempt: req.ctx.attempt };
});
// CPU time of this process per request answered: the adapter's cost, whatever else the machine runs.
let served = 0;
const handler = mode === 'sdk' ? sdk : bare;
const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  served += 1;
  handler(req, res);
});
server.listen(Number(port), '127.0.0.1', () => {
  const start = process.cpuUsage();
  process.once('SIGTERM', () => {
    const used = process.cpuUsage(start);
    console.log(`${mode}: ${served} requests, ${((used.user + used.system) / served).toFixed(1)} µs CPU per request in the server`);
    process.exit(0);
  });
});
