// Write Keel functions in JavaScript / TypeScript, and call Keel from applications.
export { Ctx, parseEtag } from './ctx.js';
export { Effects, EFFECTS_CONTENT_TYPE } from './effects.js';
export { Dependency, DependencyResponse, EgressError } from './egress.js';
export { KeelError, Retryable, Permanent, BadRequest } from './errors.js';
export { Reply } from './reply.js';
export { Request, createHandler, serve } from './server.js';
export { BatchReply, BATCH_CONTENT_TYPE, createBatchHandler, serveBatch } from './batch.js';
export { KeelClient, KeelApiError, InvokeResult } from './client.js';
