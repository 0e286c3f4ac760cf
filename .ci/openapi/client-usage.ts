// Compiled with `tsc --strict` against the types openapi-typescript generates from
// docs/openapi.json (see ../openapi-check): a client can name Keel's operations by their ids and
// read their requests and answers as types. A renamed id or a lost schema fails here.
import type { components, operations, paths } from "./keel";

type Json<R> = R extends { content: { "application/json": infer T } } ? T : never;

type Invocation = components["schemas"]["Invocation"];
type Problem = components["schemas"]["ProblemDetails"];

// Invoke: sync answers with the function's own body and Keel's headers; async with an id.
type InvokeSync = operations["invokeSync"];
const invokeParams: InvokeSync["parameters"] = {
    path: { name: "resize-image" },
    header: { "Idempotency-Key": "order-42", Prefer: "wait=10" },
};
type Accepted = Json<operations["invokeAsync"]["responses"][202]>;
const accepted: Accepted = { id: "01JC7Z3V9Q4W2B8N5M6K1H0G3F", status: "queued" };

// Invocations and the dead-letter queue: pages of invocations, one invocation, a redrive.
type Page = Json<operations["listDlq"]["responses"][200]>;
function firstDead(page: Page): Invocation | undefined {
    return page.items[0];
}
const redriven: Json<operations["redriveDlq"]["responses"][200]> | undefined = undefined;
const invocation: Json<paths["/v1/invocations/{id}"]["get"]["responses"][200]> | undefined = redriven;
const notFound: Problem["status"] = 404;

// Workflows and KV.
type Run = Json<operations["startWorkflowRun"]["responses"][202]>;
const runId = (run: Run): string => run.id;
type Written = Json<operations["putKvValue"]["responses"][201]>;

// Access: a new key's request body.
const newKey: components["schemas"]["NewKey"] = { name: "ci", scopes: ["read"] };

export { accepted, firstDead, invocation, invokeParams, newKey, notFound, runId };
export type { Written };
