//! copydesk: a job-queue worker service for AI content pipelines, driven by Postgres
//! rows. See ARCHITECTURE.md for the map of the code and its invariants.

pub mod cli;
pub mod config;
pub mod db;
pub mod fetch;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod llm;
pub mod pipeline;
pub mod publish;
pub mod queue;
pub mod telemetry;
