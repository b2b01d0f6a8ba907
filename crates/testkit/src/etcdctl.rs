//! Running `etcdctl` (v3 API) against a cluster.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{Result, TestkitError};
use crate::util::{base64_decode, render_command};
use crate::version::EtcdVersion;

/// An `etcdctl` invocation template: binary, endpoints and optional user.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    binary: PathBuf,
    endpoints: String,
    user: Option<String>,
}

impl Etcdctl {
    /// `etcdctl` of `version` talking to `endpoints` (comma-separated URLs).
    pub fn new(version: EtcdVersion, endpoints: impl Into<String>) -> Result<Self> {
        Ok(Self::with_binary(version.etcdctl_bin()?, endpoints))
    }

    /// Uses an explicit `etcdctl` binary.
    pub fn with_binary(binary: impl Into<PathBuf>, endpoints: impl Into<String>) -> Self {
        Etcdctl {
            binary: binary.into(),
            endpoints: endpoints.into(),
            user: None,
        }
    }

    /// Authenticates as `user` (`"name:password"`) on every call.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The endpoints passed as `--endpoints`.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Path of the `etcdctl` binary.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// A ready-to-run [`Command`] with `ETCDCTL_API=3`, `--endpoints` and
    /// `--user` set, followed by `args`. Inherited `ETCDCTL_*` variables are
    /// removed so they cannot conflict with the flags.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.binary);
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"ETCDCTL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        cmd.arg(format!("--endpoints={}", self.endpoints));
        if let Some(user) = &self.user {
            cmd.arg(format!("--user={user}"));
        }
        cmd.args(args);
        cmd
    }

    /// Runs `etcdctl <args>`; returns stdout (lossy UTF-8) on success, or an
    /// error carrying stderr and stdout.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.run_raw(args, None)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Like [`Etcdctl::run`] but feeds `stdin` to the process (e.g. for
    /// `txn --interactive=false`).
    pub fn run_with_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &[u8]) -> Result<String> {
        let out = self.run_raw(args, Some(stdin))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs `etcdctl <args>` and returns raw stdout bytes.
    pub fn run_raw<S: AsRef<OsStr>>(&self, args: &[S], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut cmd = self.command(args);
        let rendered = render_command(&cmd);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawn `{rendered}`"), e))?;
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(input)
                .map_err(|e| TestkitError::io(format!("write stdin of `{rendered}`"), e))?;
            // Dropping `pipe` closes stdin.
        }
        let out = child
            .wait_with_output()
            .map_err(|e| TestkitError::io(format!("wait for `{rendered}`"), e))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(TestkitError::Command {
                command: rendered,
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Runs `etcdctl -w json <args>` and parses the output.
    pub fn run_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Value> {
        let mut full: Vec<OsString> = vec!["-w".into(), "json".into()];
        full.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let out = self.run_raw(&full, None)?;
        serde_json::from_slice(&out).map_err(|e| TestkitError::Parse {
            command: render_command(&self.command(&full)),
            message: e.to_string(),
            output: String::from_utf8_lossy(&out).into_owned(),
        })
    }

    /// `etcdctl put -- key value` (key and value may be arbitrary bytes
    /// except NUL, and may start with `-`).
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let key = arg_bytes(key.as_ref())?;
        let value = arg_bytes(value.as_ref())?;
        self.run_raw(&[OsStr::new("put"), OsStr::new("--"), key, value], None)?;
        Ok(())
    }

    /// Value of `key`, or `None` if absent.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = arg_bytes(key.as_ref())?;
        let json = self.run_json(&[OsStr::new("get"), OsStr::new("--"), key])?;
        let kvs = decode_kvs(&json, true)?;
        Ok(kvs.into_iter().next().map(|(_, v)| v))
    }

    /// All keys starting with `prefix` (use `b""` for every key), in key
    /// order. Keys are returned as raw bytes (they may be binary).
    pub fn get_prefix_keys(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>> {
        let prefix = arg_bytes(prefix.as_ref())?;
        let json = self.run_json(&[
            OsStr::new("get"),
            OsStr::new("--prefix"),
            OsStr::new("--keys-only"),
            OsStr::new("--"),
            prefix,
        ])?;
        Ok(decode_kvs(&json, false)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// All key/value pairs whose key starts with `prefix`, in key order.
    pub fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = arg_bytes(prefix.as_ref())?;
        let json = self.run_json(&[
            OsStr::new("get"),
            OsStr::new("--prefix"),
            OsStr::new("--"),
            prefix,
        ])?;
        decode_kvs(&json, true)
    }

    /// `etcdctl lease grant <ttl>`; returns the lease ID.
    pub fn lease_grant(&self, ttl_secs: u64) -> Result<i64> {
        let ttl = ttl_secs.to_string();
        let json = self.run_json(&["lease", "grant", ttl.as_str()])?;
        json.get("ID")
            .and_then(Value::as_i64)
            .ok_or_else(|| TestkitError::Parse {
                command: "etcdctl -w json lease grant".into(),
                message: "missing integer field `ID`".into(),
                output: json.to_string(),
            })
    }

    /// The cluster's current revision (from the response header of a
    /// single-key get).
    pub fn revision(&self) -> Result<i64> {
        let json = self.run_json(&["get", "--", "testkit/revision-probe"])?;
        json.pointer("/header/revision")
            .and_then(Value::as_i64)
            .ok_or_else(|| TestkitError::Parse {
                command: "etcdctl -w json get".into(),
                message: "missing integer field `header.revision`".into(),
                output: json.to_string(),
            })
    }
}

fn arg_bytes(bytes: &[u8]) -> Result<&OsStr> {
    if bytes.contains(&0) {
        return Err(TestkitError::InvalidArgument(
            "etcdctl arguments cannot contain NUL bytes".into(),
        ));
    }
    Ok(OsStr::from_bytes(bytes))
}

/// Decodes `kvs` of an etcdctl JSON range response into (key, value) pairs.
fn decode_kvs(json: &Value, with_values: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let parse_err = |message: String| TestkitError::Parse {
        command: "etcdctl -w json get".into(),
        message,
        output: json.to_string(),
    };
    let Some(kvs) = json.get("kvs") else {
        // etcd omits `kvs` for an empty result.
        return Ok(Vec::new());
    };
    let kvs = kvs
        .as_array()
        .ok_or_else(|| parse_err("`kvs` is not an array".into()))?;
    let field = |kv: &Value, name: &str| -> Result<Vec<u8>> {
        match kv.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => {
                base64_decode(s).ok_or_else(|| parse_err(format!("`{name}` is not base64: {s:?}")))
            }
            Some(other) => Err(parse_err(format!("`{name}` is not a string: {other}"))),
        }
    };
    kvs.iter()
        .map(|kv| {
            let key = field(kv, "key")?;
            let value = if with_values {
                field(kv, "value")?
            } else {
                Vec::new()
            };
            Ok((key, value))
        })
        .collect()
}
