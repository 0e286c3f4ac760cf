"""Write Keel functions in Python, and call Keel from Python applications.

A function is a small HTTP server that Keel starts (a ``command`` function) or calls at a URL.
This package speaks Keel's function contract for you: :func:`serve` binds ``PORT`` and hands
each invocation to your handler as a :class:`Request` with its :class:`Ctx` (invocation id,
attempt, idempotency key, deadline, trace context, and for events the CloudEvent attributes).
The handler answers with a value (JSON), a :class:`Reply`, or :class:`Effects` — KV writes and
events that Keel commits atomically with the invocation's completion — or raises an error that
tells Keel whether to retry (:class:`Retryable`, :class:`Permanent`, :class:`BadRequest`; any
other exception is a 500, retried). :meth:`Ctx.kv_get` reads KV; :meth:`Ctx.dependency` calls
the services the function depends on through Keel's egress.

    import keel

    def register(req: keel.Request) -> keel.Effects:
        signup = req.json()                       # a 400 (not retried) if the body is not JSON
        if "@" not in signup.get("email", ""):
            raise keel.BadRequest("email must contain @")
        if req.ctx.kv_get("users", signup["email"]) is not None:
            raise keel.Permanent("already registered", status=409)
        user = {"email": signup["email"]}
        return (keel.Effects(user, status=201)
                .put_if_absent("users", signup["email"], user)
                .emit("user.registered", subject=signup["email"], data=user))

    keel.serve(register)

:class:`Client` is for applications: invoke functions (sync or async, with an Idempotency-Key),
publish events, read invocations and wait for their results.
"""

from .batch import BATCH_CONTENT_TYPE, BatchReply, batch_handler
from .client import Accepted, ApiError, Client, InvocationFailed, Response
from .context import Ctx, EventAttributes, Request
from .effects import EFFECTS_CONTENT_TYPE, Effects, Event
from .egress import Dependency, DependencyResponse, EgressError, EgressErrorKind
from .errors import BadRequest, KeelError, Permanent, Retryable
from .handler import Handler
from .kv import Versioned
from .reply import Reply
from .server import make_server, serve

__version__ = "0.1.0"

__all__ = [
    "BATCH_CONTENT_TYPE",
    "EFFECTS_CONTENT_TYPE",
    "Accepted",
    "ApiError",
    "BadRequest",
    "BatchReply",
    "Client",
    "Ctx",
    "Dependency",
    "DependencyResponse",
    "EgressError",
    "EgressErrorKind",
    "Effects",
    "Event",
    "EventAttributes",
    "Handler",
    "InvocationFailed",
    "KeelError",
    "Permanent",
    "Reply",
    "Request",
    "Response",
    "Retryable",
    "Versioned",
    "batch_handler",
    "make_server",
    "serve",
]
