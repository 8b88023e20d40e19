//! `cairn daemon`: runs the jobs on schedule and answers `/metrics` and
//! `/health` over HTTP.

pub mod http;
pub mod scheduler;
