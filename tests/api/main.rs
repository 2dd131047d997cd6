//! The one integration-test binary: every area of tokenrelay, tested over
//! real HTTP against a real fake upstream.

mod dialects;
mod fake_upstream;
mod helpers;

mod abuse;
mod access;
mod browser;
mod chat;
mod cli;
mod cluster;
mod corpus;
mod demo;
mod deploy;
mod failures;
mod input;
mod lifecycle;
mod logging;
mod native;
mod nginx;
mod openai;
mod operations;
mod page;
mod redis_cluster;
mod resume;
mod retries;
mod routing;
mod safety;
mod sdk;
mod secrets;
mod tls;
mod ui_chat;
mod ui_page;
