//! End-to-end tests: real Keel nodes on 127.0.0.1:0 over real SQLite files, calling real HTTP
//! functions; the crash test SIGKILLs the real `keel` binary.

mod api;
mod bench;
mod cluster;
mod command;
mod crash;
mod edge;
mod events;
mod idempotency;
mod killloop;
mod load;
mod observability;
mod openapi;
mod retries;
mod support;
