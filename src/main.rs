//! The `tokenrelay` server: configuration, logging, bind, serve, and a
//! graceful stop on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use tokenrelay::{AppState, Config, serve, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment and flags still apply.
    let _ = dotenvy::dotenv();
    let config = match Config::from_args(std::env::args_os(), |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    telemetry::init(config.log_format);
    let listener = match tokio::net::TcpListener::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(error) => return fail(&format!("cannot listen on {}: {error}", config.listen_addr)),
    };
    let state = match AppState::new(config).await {
        Ok(state) => state,
        Err(error) => return fail(&error),
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "tokenrelay is listening"),
        Err(error) => return fail(&error),
    }
    match serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

#[expect(clippy::print_stderr, reason = "logging may not be set up yet")]
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tokenrelay: {error}");
    ExitCode::FAILURE
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
