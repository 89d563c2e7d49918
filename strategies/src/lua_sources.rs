//! The Lua sources the Redis strategies run, for tools that measure them outside a strategy
//! (`bench ceilings` hands them to redis-benchmark as `EVALSHA`).

/// Takes every line of one order and records its reservation (`redis-lua`, `redis-decr`).
pub const RESERVE: &str = include_str!("../lua/reserve.lua");

/// Reserves every line and appends the order to a stream (`stream`).
pub const STREAM_ENQUEUE: &str = include_str!("../lua/stream_enqueue.lua");
