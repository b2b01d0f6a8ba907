//! The configuration file: TOML whose keys are the long flag names
//! (`source-endpoints = ["https://a:2379"]`, `ha = true`). The clap
//! definitions stay the one source of truth: before parsing, every file
//! key that the command line and the environment leave unset is turned into
//! a `--key=value` argument, so the precedence is flag > `ETCD_STANDBY_*`
//! variable > file > default, and every value goes through the same parser
//! and validation as a flag. The rewritten arguments never reach
//! `/proc/PID/cmdline` (nothing is re-executed), so a password in the file
//! stays out of `ps`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::UsageError as ConfigError;

/// Variable naming the configuration file (like `--config`).
pub const CONFIG_ENV: &str = "ETCD_STANDBY_CONFIG";

/// The configuration file named by `--config FILE` / `--config=FILE` in
/// `argv`, else by `ETCD_STANDBY_CONFIG`.
pub fn config_path(argv: &[OsString], env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    env(CONFIG_ENV).map(PathBuf::from)
}

/// What [`apply`] did: the new arguments and the file keys it used.
pub struct Applied {
    /// `argv` with the file's values inserted after the subcommand.
    pub argv: Vec<OsString>,
    /// Flag ids (clap's) whose value came from the file.
    pub from_file: BTreeSet<String>,
}

/// Reads `path` and inserts its values into `argv` (see the module doc).
pub fn apply_file(
    argv: Vec<OsString>,
    path: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Applied, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("reading the config file {}: {e}", path.display())))?;
    apply(argv, &text, &path.display().to_string(), env)
}

/// Inserts the values of the TOML `text` (named `origin` in messages) into
/// `argv` for its subcommand, where neither a flag nor a variable sets them.
pub fn apply(
    argv: Vec<OsString>,
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Applied, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("config file {origin}: {e}")))?;
    let root = crate::Cli::command();
    // The subcommand is the first argument that is not a flag (the global
    // `--config` may come before it).
    let mut sub_at = None;
    let mut i = 1;
    while i < argv.len() {
        let s = argv[i].to_string_lossy();
        if s == "--config" {
            i += 2;
            continue;
        }
        if !s.starts_with('-') {
            sub_at = Some(i);
            break;
        }
        i += 1;
    }
    let known = known_keys(&root);
    for key in table.keys() {
        if PER_INVOCATION.contains(&normalize(key).as_str()) {
            return Err(ConfigError(format!(
                "config file {origin}: `{key}` is a decision for one invocation; give it as \
                 the flag --{} when you mean it",
                normalize(key)
            )));
        }
        if !known.contains(&normalize(key)) {
            return Err(ConfigError(format!(
                "config file {origin}: unknown key `{key}` (keys are the long flag names of \
                 `etcd-standby run`, `promote`, `verify`, ...; see `etcd-standby run --help`)"
            )));
        }
    }
    let Some(sub_at) = sub_at else {
        return Ok(Applied {
            argv,
            from_file: BTreeSet::new(),
        });
    };
    let sub_name = argv[sub_at].to_string_lossy().into_owned();
    let Some(sub) = root.find_subcommand(&sub_name) else {
        return Ok(Applied {
            argv,
            from_file: BTreeSet::new(),
        });
    };
    let given: Vec<String> = argv[sub_at + 1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    let mut inserted = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in &table {
        let long = normalize(key);
        // Keys of other subcommands are allowed (one file for run and
        // promote) and skipped here.
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            continue;
        };
        let on_command_line = given
            .iter()
            .any(|a| *a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
        let in_env = arg
            .get_env()
            .is_some_and(|v| env(&v.to_string_lossy()).is_some());
        if on_command_line || in_env {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let values = scalars(value)
            .map_err(|what| ConfigError(format!("config file {origin}: `{key}`: {what}")))?;
        if takes_value {
            for v in values {
                inserted.push(OsString::from(format!("--{long}={v}")));
            }
        } else {
            match value {
                toml::Value::Boolean(true) => inserted.push(OsString::from(format!("--{long}"))),
                toml::Value::Boolean(false) => {}
                _ => {
                    return Err(ConfigError(format!(
                        "config file {origin}: `{key}` is a switch: true or false"
                    )));
                }
            }
        }
        from_file.insert(arg.get_id().to_string());
    }
    let mut out = argv[..=sub_at].to_vec();
    out.extend(inserted);
    out.extend_from_slice(&argv[sub_at + 1..]);
    Ok(Applied {
        argv: out,
        from_file,
    })
}

/// `source_endpoints` and `source-endpoints` are the same key.
fn normalize(key: &str) -> String {
    key.replace('_', "-")
}

/// Every long flag of every subcommand (a file may serve several).
fn known_keys(root: &clap::Command) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sub in root.get_subcommands() {
        for a in sub.get_arguments() {
            if let Some(l) = a.get_long() {
                out.insert(l.to_string());
            }
        }
    }
    out.remove("config");
    out.remove("help");
    for k in PER_INVOCATION {
        out.remove(*k);
    }
    out
}

/// Decisions an operator makes for one invocation of `promote`, never
/// from a file (a file that says `force = true` would skip every check of
/// every future promotion).
const PER_INVOCATION: &[&str] = &[
    "yes",
    "force",
    "dry-run",
    "reason",
    "to-index",
    "to-time",
    "apply-unconfirmed-tail",
    "fence-old-primary",
    "accept-mass-delete",
];

/// A TOML value as flag values: scalars as one, arrays as one per element.
fn scalars(v: &toml::Value) -> Result<Vec<String>, String> {
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("{} is not a flag value", other.type_str())),
    };
    match v {
        toml::Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// Flags whose values are secrets (printed as `<redacted>`).
pub fn is_secret(long: &str) -> bool {
    long.contains("password") || long.contains("token")
}

/// The effective configuration of `sub` (file, environment, defaults) as
/// TOML lines, each with where the value came from; secrets redacted.
pub fn render_effective(
    sub: &clap::Command,
    matches: &clap::ArgMatches,
    from_file: &BTreeSet<String>,
) -> String {
    use clap::parser::ValueSource;
    let mut out = String::new();
    for arg in sub.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if long == "help" || long == "config" || arg.is_hide_set() {
            continue;
        }
        let source = match matches.value_source(id) {
            None => {
                out.push_str(&format!("# {long} = (unset)\n"));
                continue;
            }
            Some(_) if from_file.contains(id) => "file".to_string(),
            Some(ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::DefaultValue) => "default".to_string(),
            Some(_) => "other".to_string(),
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if !arg.get_action().takes_values() {
            // A switch: clap stores "true"/"false".
            matches
                .get_one::<bool>(id)
                .map_or("false".to_string(), |b| b.to_string())
        } else if is_secret(long) {
            "\"<redacted>\"".to_string()
        } else if raw.len() == 1 && !matches!(arg.get_action(), clap::ArgAction::Append) {
            toml_scalar(&raw[0])
        } else {
            format!(
                "[{}]",
                raw.iter()
                    .map(|v| toml_string(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        // Secrets and one-invocation decisions are shown commented out, so
        // the output read back as a file sets neither.
        let (lead, note) = if is_secret(long) {
            ("# ", " (a secret: not printed)")
        } else if PER_INVOCATION.contains(&long) {
            ("# ", " (a flag only, never from a file)")
        } else {
            ("", "")
        };
        out.push_str(&format!("{lead}{long} = {value}  # {source}{note}\n"));
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Numbers unquoted (they read back the same either way).
fn toml_scalar(s: &str) -> String {
    if s.parse::<i64>().is_ok() || s.parse::<f64>().is_ok_and(f64::is_finite) {
        s.to_owned()
    } else {
        toml_string(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    const FILE: &str = r#"
        source-endpoints = ["http://a:2379", "http://b:2379"]
        advertise_peer_url = "http://s:2380"
        data-dir = "/var/lib/x"
        name = "from-file"
        ha = true
        skip-undecodable = false
        model-save-every = 5000
        operator = "alice"   # promote's: allowed, not for run
    "#;

    #[test]
    fn file_values_fill_what_flags_and_variables_leave_unset() {
        let env = |k: &str| (k == "ETCD_STANDBY_DATA_DIR").then(|| OsString::from("/from/env"));
        let a = apply(
            args(&["etcd-standby", "run", "--name", "from-flag"]),
            FILE,
            "f.toml",
            &env,
        )
        .unwrap();
        let got = strs(&a.argv);
        assert_eq!(
            got,
            [
                "etcd-standby",
                "run",
                "--source-endpoints=http://a:2379",
                "--source-endpoints=http://b:2379",
                "--advertise-peer-url=http://s:2380",
                "--ha",
                "--model-save-every=5000",
                "--name",
                "from-flag"
            ]
        );
        // The flag beat the file for --name, the variable beat it for
        // --data-dir (clap reads the variable itself).
        assert!(
            !got.iter()
                .any(|a| a.contains("from-file") || a.contains("/var/lib/x"))
        );
        assert!(a.from_file.contains("ha"), "{:?}", a.from_file);
    }

    #[test]
    fn unknown_keys_and_bad_shapes_are_refused_with_the_key() {
        let none = |_: &str| None;
        let e = apply(
            args(&["x", "run"]),
            "sorce-endpoints = \"a\"",
            "f.toml",
            &none,
        )
        .err()
        .unwrap();
        assert!(e.0.contains("unknown key `sorce-endpoints`"), "{e}");
        let e = apply(args(&["x", "run"]), "ha = \"yes\"", "f.toml", &none)
            .err()
            .unwrap();
        assert!(e.0.contains("`ha` is a switch"), "{e}");
        let e = apply(args(&["x", "run"]), "name = { a = 1 }", "f.toml", &none)
            .err()
            .unwrap();
        assert!(e.0.contains("`name`: table is not a flag value"), "{e}");
        let e = apply(args(&["x", "run"]), "name = ", "f.toml", &none)
            .err()
            .unwrap();
        assert!(e.0.starts_with("config file f.toml:"), "{e}");
    }

    /// `force = true` in a file would skip every check of every later
    /// promotion; such decisions are flags of one invocation only.
    #[test]
    fn promote_decisions_are_not_taken_from_a_file() {
        let none = |_: &str| None;
        for key in ["yes", "force", "dry-run", "accept-mass-delete"] {
            let e = apply(
                args(&["x", "promote"]),
                &format!("{key} = true"),
                "f.toml",
                &none,
            )
            .err()
            .unwrap();
            assert!(
                e.0.contains(&format!("`{key}` is a decision for one invocation")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_config_path_comes_from_the_flag_or_the_variable() {
        let env = |k: &str| (k == CONFIG_ENV).then(|| OsString::from("/env.toml"));
        let none = |_: &str| None;
        assert_eq!(
            config_path(&args(&["x", "run", "--config", "/a.toml"]), &env),
            Some(PathBuf::from("/a.toml"))
        );
        assert_eq!(
            config_path(&args(&["x", "--config=/b.toml", "run"]), &env),
            Some(PathBuf::from("/b.toml"))
        );
        assert_eq!(
            config_path(&args(&["x", "run"]), &env),
            Some(PathBuf::from("/env.toml"))
        );
        assert_eq!(config_path(&args(&["x", "run"]), &none), None);
    }
}
