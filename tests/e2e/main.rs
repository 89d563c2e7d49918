//! End-to-end tests: the real server on a real socket, against real PostgreSQL. One binary, so the
//! dependency tree links once.

mod admin;
mod backend_down;
mod bad_input;
mod bench;
mod contention;
mod disconnect;
mod faults;
mod helpers;
mod orders;
mod populate;
mod redis_stock;
mod seed;
mod sessions;
mod stream;
