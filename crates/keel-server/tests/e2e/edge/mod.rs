//! Hostile and careless clients (issue 12): attribute injection, slow and idle connections,
//! and the exact answers to malformed requests.

mod connections;
mod injection;
