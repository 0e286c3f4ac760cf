//! Runtimes: how an attempt reaches a function. `url` functions are called over a pooled
//! keep-alive HTTP client ([`url`]); managed `command` functions will add a process pool.

pub(crate) mod url;

pub(crate) use self::url::{AttemptCall, UrlRuntime};
