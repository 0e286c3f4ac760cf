//! `[server.limits]` and slow clients: each limit hit is answered with its problem while the
//! node goes on serving others, a batch with one invalid event stores none, and 2,000 clients
//! that never finish their headers are cut off on time without slowing anyone else.

mod answers;
mod slowloris;
