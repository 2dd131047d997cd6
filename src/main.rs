//! The `tokenrelay` server: configuration, logging, bind, serve, and a
//! graceful stop on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use tokenrelay::config::{DotEnv, check_name};
use tokenrelay::{AppState, Config, bind, serve, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment and flags still apply.
    let dotenv = match std::env::current_dir().map_err(|error| error.to_string()) {
        Ok(dir) => DotEnv::find(&dir),
        Err(error) => Err(error),
    };
    let dotenv = match dotenv {
        Ok(dotenv) => dotenv,
        Err(error) => return fail(&error),
    };
    let warnings = match misnamed(&dotenv) {
        Ok(warnings) => warnings,
        Err(error) => return fail(&error),
    };
    let config = match Config::from_args(std::env::args_os(), |name| {
        std::env::var(name)
            .ok()
            .or_else(|| dotenv.get(name).map(str::to_owned))
    }) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let level = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| dotenv.get("RUST_LOG").map(str::to_owned));
    telemetry::init(config.log_format, level.as_deref());
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let listener = match bind(config.listen_addr) {
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
    // Here, on `main`'s own thread, not as a task on a worker: in a storm
    // of connections the workers' run queues hold thousands of ready tasks,
    // and an accept loop queued behind them let the listen backlog overflow
    // (the kernel then drops connections, or resets them when a SYN cookie
    // fails). This thread gets its turn from the OS scheduler instead, at
    // the price of a thread switch per connection (README, Performance).
    match serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// Stops on a variable whose name misspells a setting, in the environment
/// or in `.env`; names that only look like ours are warnings.
fn misnamed(dotenv: &DotEnv) -> Result<Vec<String>, String> {
    let file = dotenv
        .path
        .as_ref()
        .map_or_else(String::new, |path| path.display().to_string());
    let environment = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .map(|name| ("the environment", name));
    let in_file = dotenv
        .vars
        .iter()
        .map(|(name, _)| (file.as_str(), name.clone()));
    let mut warnings = Vec::new();
    for (source, name) in environment.chain(in_file) {
        match check_name(&name) {
            Ok(None) => {}
            Ok(Some(warning)) => warnings.push(format!("{source}: {warning}")),
            Err(problem) => return Err(format!("{source}: {problem}")),
        }
    }
    Ok(warnings)
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
