//! copydesk: a job-queue worker service for AI content pipelines, driven by Postgres
//! rows. See ARCHITECTURE.md for the map of the code and its invariants.
//!
//! Layers: a module imports only from floors below its own; the floors are written
//! once, in `tests/layers.rs`, which checks them (ARCHITECTURE.md draws them). The
//! queue engine is a crate of its own, `copydesk-queue`, so the compiler keeps it under
//! everything.

pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod fetch;
pub mod files;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod links;
pub mod llm;
pub mod mail;
pub mod pipeline;
pub mod publish;
pub mod report;
pub mod retry_after;
pub mod store;
pub mod telemetry;

/// The queue engine (the `copydesk-queue` crate).
pub use copydesk_queue as queue;
