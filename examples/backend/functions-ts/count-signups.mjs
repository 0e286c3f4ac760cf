// `count-signups` in TypeScript (on `user.registered`): increments `counters/signups` with
// if_version, so concurrent deliveries never lose a count (a conflict applies nothing and Keel
// retries the delivery, which then reads the new version). The same function as the Rust
// `count-signups` of the example backend (src/functions/users.rs): same grants
// (`kv = ["counters:read", "counters:write"]`), same effects, same result.
//
// Plain ESM JavaScript with the SDK imported by a relative path: `node count-signups.mjs` runs it
// as is (Keel sets PORT and KEEL_URL), no build step, no npm install.
import { serve, Effects } from '../../../sdks/typescript/src/index.js';

/** @param {import('../../../sdks/typescript/src/index.js').Request} req */
export async function countSignups(req) {
  /** @type {{value: number, version: number} | null} */
  const current = await req.ctx.kvGet('counters', 'signups');
  if (current === null) {
    return new Effects().result({ signups: 1 }).putIfAbsent('counters', 'signups', 1);
  }
  const next = current.value + 1;
  return new Effects().result({ signups: next }).putIfVersion('counters', 'signups', next, current.version);
}

await serve(countSignups);
