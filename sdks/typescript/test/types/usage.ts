// A TypeScript user of the package, type-checked by `npm run check` against types/ (the
// declarations): what the README shows compiles under --strict.
import http from 'node:http';
import {
  serve, createHandler, Effects, Retryable, Permanent, Reply, KeelClient, KeelApiError, EgressError,
  type Request,
} from '@keel/sdk';

interface Signup { email: string; name?: string }

async function register(req: Request) {
  const signup = req.json() as Signup;
  if (!signup.email.includes('@')) throw new Permanent('email must contain @', { status: 400 });
  const existing = await req.ctx.kvGet<{ email: string }>('users', signup.email);
  if (existing) return Reply.json({ email: existing.value.email, version: existing.version });
  const deadline: Date | null = req.ctx.deadline;
  const left: number | null = req.ctx.remainingMs();
  try {
    const r = await req.ctx.dependency('email').post('/send', { json: { to: signup.email } });
    r.errorForStatus();
  } catch (e) {
    if (e instanceof EgressError && e.kind === 'breaker-open') throw new Retryable({ after: e.retryAfterSecs ?? 5 });
    throw e;
  }
  return new Effects()
    .status(201)
    .result({ email: signup.email, deadline, left, attempt: req.ctx.attempt, event: req.ctx.event?.type })
    .putIfAbsent('users', signup.email, signup)
    .put('counters', 'x', 1, { ifVersion: 3 })
    .delete('carts', signup.email)
    .emit('user.registered', { subject: signup.email, data: { email: signup.email } });
}

const server: http.Server = await serve(register, { port: 0 });
server.close();
http.createServer(createHandler(register));

const client = new KeelClient({ url: 'http://127.0.0.1:7733', apiKey: process.env.KEEL_API_KEY });
try {
  const r = await client.invoke('register-user', { email: 'ada@example.com' }, { idempotencyKey: 'k1' });
  const id: string | null = r.invocationId;
  const replayed: boolean = r.replayed;
  const { ids }: { ids: string[] } = await client.publish('user.registered', { id }, { subject: 'x' });
  const accepted = await client.invokeAsync('register-user', {}, { delay: '5s' });
  const done = await client.waitForResult(accepted.id, { timeoutMs: 1000 });
  console.log(replayed, ids, done.json(), (await client.getInvocation(accepted.id)).status);
} catch (e) {
  if (e instanceof KeelApiError) console.log(e.status, e.problem, e.retryAfterSecs);
}
