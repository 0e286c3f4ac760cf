//! Hostile and careless clients (issue 12): attribute injection, slow and idle connections,
//! and the exact answers to malformed requests.

mod answers;
mod connections;
mod injection;
