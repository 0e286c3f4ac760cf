//! End-to-end tests: real Keel nodes on 127.0.0.1:0 over real SQLite files, calling real HTTP
//! functions; the crash tests SIGKILL the real `keel` binary, and `serve` runs it as a user does.

mod access;
mod access_tokens;
mod api;
mod batch;
mod bench;
mod chaos;
mod cli;
mod cluster;
mod command;
mod console;
mod crash;
mod dashboard;
mod edge;
mod egress;
mod events;
mod firewall;
mod first_function;
mod flow;
mod http2;
mod idempotency;
mod killloop;
mod limits;
mod load;
mod observability;
mod openapi;
mod retries;
mod sandbox;
mod schedules;
mod schemas;
mod serve;
mod support;
mod system_events;
mod tls;
mod workflows;
