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
    let shutdown = shutdown_signal();
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "tokenrelay is listening"),
        Err(error) => return fail(&error),
    }
    match serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

#[expect(clippy::print_stderr, reason = "logging may not be set up yet")]
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tokenrelay: {error}");
    ExitCode::FAILURE
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when it is first polled, so a signal that arrives right after
/// start-up is never lost to the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
