//! The `.env` file, read strictly. dotenvy's loader stops at the first line
//! it cannot parse and drops that line and every line after it without a
//! word, so a quote left open silently loses the rest of the settings; and
//! a misspelt name (`LISTEN_ADR`) is just another variable nobody reads.
//! Here both stop the server, naming the file, the line and what it
//! resembles, before anything is served with half a configuration.
//!
//! The values are not put into the process environment: they are one more
//! source behind it (the environment wins, as with dotenvy), which keeps
//! start-up free of global mutation.

use std::path::{Path, PathBuf};

use super::SETTINGS;

/// Prefixes of our settings: an unknown variable that starts with one is
/// probably meant for us, though it may also be a `${VAR}` of the file of
/// upstreams, so it is only worth a warning.
const OURS: [&str; 5] = ["UPSTREAM_", "RESUME_", "TOKENRELAY_", "PROXY_", "TLS_"];

/// The variables of a `.env` file, in file order.
#[derive(Debug, Default)]
pub struct DotEnv {
    pub path: Option<PathBuf>,
    pub vars: Vec<(String, String)>,
}

impl DotEnv {
    /// The `.env` of `dir` or its nearest ancestor that has one, as dotenvy
    /// finds it; none at all is normal.
    pub fn find(dir: &Path) -> Result<Self, String> {
        let Some(path) = dir
            .ancestors()
            .map(|dir| dir.join(".env"))
            .find(|path| path.is_file())
        else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("{}: cannot be read: {error}", path.display()))?;
        let iter = dotenvy::from_path_iter(&path)
            .map_err(|error| format!("{}: cannot be read: {error}", path.display()))?;
        let mut vars = Vec::new();
        for item in iter {
            match item {
                Ok(pair) => vars.push(pair),
                Err(dotenvy::Error::LineParse(line, _)) => {
                    return Err(format!(
                        "{}: line {}: cannot parse `{}`; expected NAME=value (quote values with spaces, close every quote)",
                        path.display(),
                        line_number(&text, &line),
                        line.lines().next().unwrap_or_default().trim()
                    ));
                }
                Err(error) => return Err(format!("{}: {error}", path.display())),
            }
        }
        Ok(Self {
            path: Some(path),
            vars,
        })
    }

    /// The value of `name`; the first declaration wins, as with dotenvy.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Where `line` starts in `text`, counting from 1.
fn line_number(text: &str, line: &str) -> usize {
    let first = line.lines().next().unwrap_or_default();
    text.lines()
        .position(|candidate| candidate == first)
        .map_or(1, |index| index + 1)
}

/// What is wrong with a variable's name: `Err` for a name so close to a
/// setting that it must be a misspelling of it (one or two letters off,
/// with the same first word: `LISTEN_ADR`), `Ok(Some(_))` for one that only
/// looks like ours (close to a setting but with another first word, as
/// OpenSSL's `SSL_CERT_FILE` is to `TLS_CERT_FILE`, or with our prefix),
/// `Ok(None)` for anything else.
pub fn check_name(name: &str) -> Result<Option<String>, String> {
    if SETTINGS.iter().any(|setting| setting.name == name) {
        return Ok(None);
    }
    if let Some(meant) = resembled(name) {
        let message = format!("`{name}` is not a setting; did you mean {meant}?");
        return if first_word(name) == first_word(meant) {
            Err(message)
        } else {
            Ok(Some(message))
        };
    }
    Ok(OURS
        .iter()
        .any(|prefix| name.starts_with(prefix))
        .then(|| format!("`{name}` looks like a setting but is not one (see --help)")))
}

/// The name up to its first separator, in capitals.
fn first_word(name: &str) -> String {
    name.split(['_', '-'])
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// The setting `name` is a near miss of: one or two letters added, lost,
/// swapped or changed, or the same letters with other separators.
fn resembled(name: &str) -> Option<&'static str> {
    let squeezed = |text: &str| -> String {
        text.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let wanted = squeezed(name);
    if wanted.len() < 6 {
        return None;
    }
    SETTINGS
        .iter()
        .map(|setting| setting.name)
        .filter(|setting| {
            let known = squeezed(setting);
            known == wanted || distance(&known, &wanted) <= 2
        })
        .min_by_key(|setting| distance(&squeezed(setting), &wanted))
}

/// Edit distance with transpositions (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_name_the_setting_they_resemble() {
        let cases = [
            ("LISTEN_ADR", "LISTEN_ADDR"),
            ("LISTEN-ADDR", "LISTEN_ADDR"),
            ("PROXY_API_KEY", "PROXY_API_KEYS"),
            ("UPSTREAM_BASEURL", "UPSTREAM_BASE_URL"),
            ("KEEPALIVE_SEC", "KEEPALIVE_SECS"),
            ("RESUME_GARCE_SECS", "RESUME_GRACE_SECS"),
        ];
        for (name, meant) in cases {
            let problem = check_name(name);
            assert!(
                problem
                    .as_ref()
                    .is_err_and(|message| message.contains(meant)),
                "{name}: {problem:?}"
            );
        }
    }

    #[test]
    fn settings_and_unrelated_names_pass_and_lookalikes_are_warned_of() {
        for name in [
            "LISTEN_ADDR",
            "PATH",
            "HOME",
            "OPENAI_API_KEY",
            "RUST_LOG",
            "CARGO",
        ] {
            assert_eq!(check_name(name), Ok(None), "{name}");
        }
        let warning = check_name("UPSTREAM_GROQ_SECRET");
        assert!(warning.as_ref().is_ok_and(Option::is_some), "{warning:?}");
    }

    #[test]
    fn a_line_that_does_not_parse_is_named_with_its_file_and_number() {
        let dir = std::env::temp_dir().join(format!("tokenrelay-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "# settings\nLISTEN_ADDR=127.0.0.1:0\nDEFAULT_MODEL=\"unclosed\nKEEPALIVE_SECS=5\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let problem = DotEnv::find(&dir).map(|env| env.vars);
        let _ = std::fs::remove_dir_all(&dir);
        let message = problem.err().unwrap_or_default();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("line 3")
                && message.contains("DEFAULT_MODEL=\"unclosed"),
            "{message}"
        );
    }
}
