//! End-to-end tests: the real server on a real socket, against real PostgreSQL. One binary, so the
//! dependency tree links once.

mod admin;
mod backend_down;
mod bad_input;
mod batch_writer;
mod bench;
mod chaos;
mod coalesce;
mod contention;
mod dialect_server;
mod dialects;
mod disconnect;
mod faults;
mod helpers;
mod kept_catalogue;
mod nats;
mod optimistic;
mod orderlog;
mod orders;
mod overload;
mod populate;
mod populate_mariadb;
mod properties;
mod redis_cluster;
mod redis_stock;
mod replicas;
mod seed;
mod sessions;
mod stream;
mod unit_pool;
