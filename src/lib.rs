//! copydesk: a job-queue worker service for AI content pipelines, driven by Postgres
//! rows. See ARCHITECTURE.md for the map of the code and its invariants.
//!
//! Layers, top to bottom (a module imports only from those below it; the queue engine
//! is a crate of its own, `copydesk-queue`, so the compiler keeps it under everything):
//! `cli` → `demo` → `app` → `http` → `pipeline` → `jobs` → `publish`, `llm`, `files` → `store`
//! → `domain`, `config`, `db`, `fetch`, `keys`, `mail`, `report`, `retry_after`, `telemetry`
//! → `queue` (the engine).

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
