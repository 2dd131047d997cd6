//! Logging set-up: human-readable lines by default, JSON for log pipelines,
//! the level from `RUST_LOG` (in the environment or `.env`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber, filtering by the `RUST_LOG` directives
/// in `level` (`info` when unset or unreadable); later calls (tests) are no-ops.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = level
        .and_then(|level| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes would garble logs written to files and pipelines.
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A value a client chose (a model name, an id, a path), as it goes into a
/// log line: control characters and the Unicode line and direction
/// controls are written as escapes, so a client cannot end a log line and
/// forge the next one, or make a terminal show something else.
pub(crate) struct Untrusted<'a>(pub(crate) &'a str);

impl std::fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            let forging = c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if forging {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Untrusted;

    #[test]
    fn control_characters_are_escaped_and_the_rest_left_alone() {
        let forged = "gpt-4o\n2026-01-01T00:00:00Z  INFO stream finished outcome=stop\r\u{1b}[2J\u{2028}\u{202e}";
        let shown = Untrusted(forged).to_string();
        assert_eq!(
            shown,
            "gpt-4o\\u{a}2026-01-01T00:00:00Z  INFO stream finished outcome=stop\\u{d}\\u{1b}[2J\\u{2028}\\u{202e}"
        );
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(
            Untrusted("Qwen/Qwen3-8B:free é 模型").to_string(),
            "Qwen/Qwen3-8B:free é 模型"
        );
    }
}
