// Keel against job-queue peers, with one Node.js client and Node no-op workers, side by side in
// one run on this machine (BENCHMARKS.md, "Against the peers"):
//
//   async  JOBS durable no-op jobs submitted with INFLIGHT in flight; jobs/s from the first
//          submit until every job is finished (Keel: the API lists none queued, running or
//          retrying; BullMQ: the worker saw each completed; NATS: the worker acked each)
//   sync   SYNC sequential round trips, one job at a time, submit to finished: p50 and p99
//          (Keel: POST /invoke; BullMQ: add + waitUntilFinished; NATS: publish + the worker's
//          answer on an inbox)
//
// and the CPU per async job of the server process (keel, redis-server, nats-server) and of the
// worker process (from /proc/PID/stat), of the client (this process), and the host's idle time
// over the async run (idle + iowait, /proc/stat). Systems:
//   keel          keel serve, SQLite, fsync on; a node:http no-op function (concurrency 64)
//   keel-batch    the same with batch delivery (batch = { max_size = 100, max_wait = "5ms" },
//                 concurrency 8): the function answers each batch with {"failed":[]}
//   bullmq-fsync  BullMQ on redis-server with appendonly yes, appendfsync always (durable acks)
//   bullmq        BullMQ on redis-server without persistence (Redis's default: no AOF)
//   nats          NATS JetStream, file storage (JetStream's default: no fsync before the ack)
//
// Needs node, redis-server and nats-server (Debian: `apt-get install nodejs npm redis-server
// nats-server`), `npm ci` in bench/peers, and a build of keel.
// Usage: node bench/peers/peers.mjs [--keel target/production/keel] [--jobs 20000] [--inflight 64]
//                                   [--sync 2000] [--rounds 1] [--systems keel,keel-batch,...]
import { fork, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ALL = ['keel', 'keel-batch', 'bullmq-fsync', 'bullmq', 'nats'];
const args = {
  keel: 'target/production/keel',
  jobs: 20000,
  inflight: 64,
  sync: 2000,
  rounds: 1,
  systems: ALL.join(','),
};
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (!(key in args) || process.argv[i + 1] === undefined) {
    console.error(`usage: peers.mjs [--keel BIN] [--jobs N] [--inflight N] [--sync N] [--rounds N] [--systems ${ALL}]`);
    process.exit(2);
  }
  args[key] = typeof args[key] === 'number' ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
const systems = args.systems.split(',');
for (const s of systems) if (!ALL.includes(s)) throw new Error(`unknown system ${s}: one of ${ALL}`);
const needs = { 'bullmq-fsync': 'redis-server', bullmq: 'redis-server', nats: 'nats-server' };
/** The path of `tool` on PATH or in /usr/sbin (where Debian puts nats-server), or undefined. */
const which = (tool) =>
  (process.env.PATH ?? '')
    .split(':')
    .concat(['/usr/sbin'])
    .map((d) => path.join(d, tool))
    .find((p) => fs.existsSync(p));
for (const s of systems) {
  if (needs[s] && !which(needs[s])) {
    console.error(`${s} needs ${needs[s]}: apt-get install ${needs[s]} (or leave ${s} out with --systems)`);
    process.exit(2);
  }
}
if (systems.some((s) => s.startsWith('keel')) && !fs.existsSync(args.keel)) {
  console.error(`no keel at ${args.keel}: cargo build --profile production -p keel-server, or --keel BIN`);
  process.exit(2);
}
const TICK = 100; // clock ticks per second of /proc/PID/stat on Linux

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cpuSeconds = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK;
};
/** Jiffies of the host so far, all and idle (idle + iowait), from /proc/stat. */
const hostTimes = () => {
  const ticks = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1, 9).map(Number);
  return { all: ticks.reduce((a, b) => a + b, 0), idle: ticks[3] + ticks[4] };
};
const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const waitPort = async (port, what, proc) => {
  for (let i = 0; i < 400; i++) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => (c.end(), r(true)));
      c.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen on ${port}`);
};
const stop = async (proc) => {
  if (!proc || proc.exitCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await gone;
};
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** Runs `submit(i)` for i in 0..n with `inflight` at a time. */
async function pool(n, inflight, submit) {
  let next = 0;
  const lane = async () => {
    while (next < n) await submit(next++);
  };
  await Promise.all(Array.from({ length: inflight }, lane));
}

/** A forked worker.mjs: resolves once it is ready; `finished(n)` resolves when it reported n done. */
async function startWorker(system, arg) {
  const child = fork(path.join(here, 'worker.mjs'), [system, String(arg ?? '')], { stdio: 'inherit' });
  let done = 0;
  const waiters = [];
  const ready = new Promise((resolve, reject) => {
    child.on('message', (m) => {
      if (m.ready) resolve(m);
      if (m.done !== undefined) {
        done = m.done;
        for (const w of waiters.filter((w) => done >= w.n)) w.resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`worker ${system} exited with ${code}`)));
  });
  const info = await ready;
  return {
    child,
    info,
    done: () => done,
    finished: (n) => (done >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
  };
}

function httpJson(agent, port, method, url, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        agent,
        host: '127.0.0.1',
        port,
        method,
        path: url,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if (res.statusCode >= 300) reject(new Error(`${method} ${url}: ${res.statusCode} ${text}`));
          else resolve(text ? JSON.parse(text) : null);
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function keel(tmp, batch) {
  const worker = await startWorker('keel');
  const port = await freePort();
  const conf = path.join(tmp, 'keel.toml');
  fs.writeFileSync(
    conf,
    `[server]\nlisten = "127.0.0.1:${port}"\n[storage]\nurl = "sqlite://${tmp}/keel.db"\n` +
      `[functions.noop]\nurl = "http://127.0.0.1:${worker.info.port}/"\n` +
      (batch ? 'concurrency = 8\nbatch = { max_size = 100, max_wait = "5ms" }\n' : `concurrency = ${process.env.KC ?? 64}\n`),
  );
  const env = { ...process.env };
  delete env.RUST_LOG; // Keel at its default log level, as a user runs it
  const log = fs.openSync(path.join(tmp, 'keel.log'), 'w');
  const server = spawn(args.keel, ['serve', '-c', conf], { env, stdio: ['ignore', log, log] });
  await waitPort(port, 'keel serve', server);
  const agent = new http.Agent({ keepAlive: true, maxSockets: args.inflight });
  const open = async () => {
    for (const status of ['queued', 'running', 'retrying']) {
      const page = await httpJson(agent, port, 'GET', `/v1/invocations?function=noop&status=${status}&limit=1`);
      if (page.items.length) return true;
    }
    return false;
  };
  return {
    server,
    worker,
    submit: (i) => httpJson(agent, port, 'POST', '/v1/functions/noop/invocations', { n: i }),
    drained: async () => {
      while (await open()) await sleep(5);
    },
    roundTrip: (i) => httpJson(agent, port, 'POST', '/v1/functions/noop/invoke', { n: i }),
    close: async () => {
      agent.destroy();
      await stop(server);
      await stop(worker.child);
    },
  };
}

async function bullmq(tmp, fsync) {
  const { Queue, QueueEvents } = await import('bullmq');
  const port = await freePort();
  const persistence = fsync ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const server = spawn(
    which('redis-server'),
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', tmp, ...persistence],
    {
      stdio: 'ignore',
    },
  );
  await waitPort(port, 'redis-server', server);
  const connection = { host: '127.0.0.1', port };
  const queue = new Queue('jobs', { connection });
  const events = new QueueEvents('jobs', { connection });
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
  const worker = await startWorker('bullmq', port);
  let submitted = 0;
  return {
    server,
    worker,
    submit: (i) => (submitted++, queue.add('job', { n: i })),
    drained: () => worker.finished(submitted),
    roundTrip: async (i) => {
      submitted++;
      const job = await queue.add('job', { n: i });
      await job.waitUntilFinished(events);
    },
    close: async () => {
      await queue.close();
      await events.close();
      await stop(worker.child);
      await stop(server);
    },
  };
}

async function nats(tmp) {
  const { connect, headers, createInbox, StorageType, AckPolicy } = await import('nats');
  const port = await freePort();
  const server = spawn(which('nats-server'), ['-js', '-sd', tmp, '-a', '127.0.0.1', '-p', String(port)], {
    stdio: 'ignore',
  });
  await waitPort(port, 'nats-server', server);
  const nc = await connect({ servers: `127.0.0.1:${port}` });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: 'JOBS', subjects: ['jobs.>'], storage: StorageType.File });
  await jsm.consumers.add('JOBS', { durable_name: 'worker', ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const js = nc.jetstream();
  const worker = await startWorker('nats', port);
  let submitted = 0;
  return {
    server,
    worker,
    submit: (i) => (submitted++, js.publish('jobs.noop', JSON.stringify({ n: i }))),
    drained: () => worker.finished(submitted),
    roundTrip: async (i) => {
      submitted++;
      const inbox = createInbox();
      const sub = nc.subscribe(inbox, { max: 1 });
      const h = headers();
      h.set('done-to', inbox);
      await js.publish('jobs.noop', JSON.stringify({ n: i }), { headers: h });
      for await (const _ of sub) break;
    },
    close: async () => {
      await nc.drain();
      await stop(worker.child);
      await stop(server);
    },
  };
}

const START = {
  keel: (t) => keel(t, false),
  'keel-batch': (t) => keel(t, true),
  'bullmq-fsync': (t) => bullmq(t, true),
  bullmq: (t) => bullmq(t, false),
  nats,
};

async function measure(system) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `peers-${system}-`));
  const sys = await START[system](tmp);
  try {
    // Warm: connections, the worker's pool, the server's caches.
    await pool(500, args.inflight, sys.submit);
    await sys.drained();
    const [server0, worker0, client0] = [
      cpuSeconds(sys.server.pid),
      cpuSeconds(sys.worker.child.pid),
      process.cpuUsage(),
    ];
    const host0 = hostTimes();
    const start = process.hrtime.bigint();
    await pool(args.jobs, args.inflight, sys.submit);
    await sys.drained();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const serverUs = ((cpuSeconds(sys.server.pid) - server0) * 1e6) / args.jobs;
    const workerUs = ((cpuSeconds(sys.worker.child.pid) - worker0) * 1e6) / args.jobs;
    const client = process.cpuUsage(client0);
    const clientUs = (client.user + client.system) / args.jobs;
    const host1 = hostTimes();
    const idle = (100 * (host1.idle - host0.idle)) / Math.max(host1.all - host0.all, 1);
    const times = [];
    for (let i = 0; i < args.sync; i++) {
      const t0 = process.hrtime.bigint();
      await sys.roundTrip(i);
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    return {
      system,
      jobs_per_s: Math.round(args.jobs / seconds),
      server_cpu_us: Math.round(serverUs * 10) / 10,
      worker_cpu_us: Math.round(workerUs * 10) / 10,
      client_cpu_us: Math.round(clientUs * 10) / 10,
      host_idle_pct: Math.round(idle * 10) / 10,
      sync_p50_ms: times.length ? Math.round(percentile(times, 50) * 1000) / 1000 : null,
      sync_p99_ms: times.length ? Math.round(percentile(times, 99) * 1000) / 1000 : null,
    };
  } finally {
    await sys.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const rows = [];
for (let round = 0; round < args.rounds; round++) {
  const order = round % 2 ? [...systems].reverse() : systems;
  for (const system of order) {
    const row = await measure(system);
    rows.push(row);
    console.error(JSON.stringify(row));
  }
}
console.log(
  `${args.jobs} jobs, ${args.inflight} in flight; ${args.sync} sequential round trips; ${args.rounds} round(s), medians`,
);
console.log(
  'system          jobs/s  server µs/job  worker µs/job  client µs/job  idle%  sync p50 ms  sync p99 ms  x keel',
);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const of = (system, key) => median(rows.filter((r) => r.system === system).map((r) => r[key]));
const keelRate = systems.includes('keel') ? of('keel', 'jobs_per_s') : null;
// A median of two is their mean: rounded for the table (0.1685, not 0.16849999999999998).
const cell = (system, key, digits, width) => of(system, key).toFixed(digits).padStart(width);
for (const s of systems) {
  const ratio = keelRate ? (of(s, 'jobs_per_s') / keelRate).toFixed(2) : '-';
  console.log(
    `${s.padEnd(14)} ${cell(s, 'jobs_per_s', 0, 7)} ${cell(s, 'server_cpu_us', 1, 14)} ` +
      `${cell(s, 'worker_cpu_us', 1, 14)} ${cell(s, 'client_cpu_us', 1, 14)} ` +
      `${cell(s, 'host_idle_pct', 1, 6)} ${cell(s, 'sync_p50_ms', 3, 12)} ` +
      `${cell(s, 'sync_p99_ms', 3, 12)} ${ratio.padStart(7)}`,
  );
}
