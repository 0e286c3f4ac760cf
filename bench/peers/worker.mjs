// The no-op worker of one system, in a process of its own (forked by peers.mjs):
//   keel    an HTTP function answering 200 `{}` (a batch: `{"failed":[]}`); Keel calls it
//   bullmq  a BullMQ Worker whose processor returns `{}` at once
//   nats    a JetStream pull consumer that acks each message (and answers a round trip's inbox)
// It tells its parent `{ready: true}`, then `{done: n}` each time n more jobs are finished (BullMQ:
// moved to completed; NATS: acked), so the parent can end an async run without polling the queue.
import http from 'node:http';

const [system, arg] = process.argv.slice(2);
let done = 0;
const finished = (n = 1) => {
  done += n;
  process.send({ done });
};

if (system === 'keel') {
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const batch = (req.headers['content-type'] ?? '').startsWith('application/vnd.keel.batch+json');
      const body = batch ? '{"failed":[]}' : '{}';
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    });
  });
  server.listen(0, '127.0.0.1', () => process.send({ ready: true, port: server.address().port }));
} else if (system === 'bullmq') {
  const { Worker } = await import('bullmq');
  const worker = new Worker('jobs', async () => ({}), {
    connection: { host: '127.0.0.1', port: Number(arg) },
    concurrency: 64,
  });
  worker.on('completed', () => finished());
  await worker.waitUntilReady();
  process.send({ ready: true });
} else if (system === 'nats') {
  const { connect, headers } = await import('nats');
  const nc = await connect({ servers: `127.0.0.1:${arg}` });
  const js = nc.jetstream();
  const consumer = await js.consumers.get('JOBS', 'worker');
  const messages = await consumer.consume({ max_messages: 256 });
  process.send({ ready: true });
  for await (const m of messages) {
    m.ack();
    const to = m.headers?.get('done-to');
    if (to) nc.publish(to, new Uint8Array(0), { headers: headers() });
    finished();
  }
} else {
  console.error(`unknown system ${system}`);
  process.exit(2);
}
