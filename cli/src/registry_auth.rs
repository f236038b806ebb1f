//! Registry credentials on the client: Docker's client config (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`) read for `--with-registry-auth`, and written by `swarm
//! login|logout` in the same format, so that docker and swarm share one login.
//!
//! The pure core works on the parsed document (`credentials_in`, `with_login`,
//! `without_login`); `read_config` and `write_config` are the IO edges. Credential helpers
//! (`credsStore`, `credHelpers`) are not run: a registry whose credentials only a helper
//! holds is an error that says how to get around it.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use serde_json::{Map, Value, json};
use swarm_api::auth::{RegistryAuth, RegistryCredential};
use swarm_api::image::{DEFAULT_REGISTRY, ImageRef, ImageRefError};

/// The key `docker login` uses for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "cannot find docker's client config: neither DOCKER_CONFIG nor HOME is set (set DOCKER_CONFIG to its directory)"
    )]
    NoConfigDir,
    #[error("cannot read {}: {detail}", path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{} is not valid JSON: {detail} (fix or remove it)", path.display())]
    Invalid { path: PathBuf, detail: String },
    #[error("cannot write {}: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
    #[error(
        "the credentials for {registry} are in {}'s auths.{key} but cannot be read: {detail} (log in again with `swarm login {registry}`)",
        path.display()
    )]
    BadEntry {
        path: PathBuf,
        registry: String,
        key: String,
        detail: String,
    },
    #[error(
        "the credentials for {registry} are kept by the docker credential helper {helper:?} ({setting} in {}), which swarm does not run: log in with `swarm login {registry} -u USER --password-stdin` (it writes them into that file), or remove the helper from it and `docker login` again",
        path.display()
    )]
    HelperNotSupported {
        path: PathBuf,
        registry: String,
        helper: String,
        setting: String,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidImage {
        reference: String,
        reason: ImageRefError,
    },
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (Docker's rule).
pub fn config_path() -> Result<PathBuf, AuthError> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(AuthError::NoConfigDir)?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The config at `path`; an empty document when there is none (nobody logged in).
pub fn read_config(path: &Path) -> Result<Value, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(json!({})),
        Err(e) => {
            return Err(AuthError::Read {
                path: path.into(),
                detail: e.to_string(),
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let document: Value = serde_json::from_str(&text).map_err(|e| AuthError::Invalid {
        path: path.into(),
        detail: e.to_string(),
    })?;
    if !document.is_object() {
        return Err(AuthError::Invalid {
            path: path.into(),
            detail: "the document is not an object".into(),
        });
    }
    Ok(document)
}

/// Writes the config at `path` with mode 0600 (it holds passwords), aside then renamed so
/// that a crash never leaves half a file; its directory is made (0700) if missing.
pub fn write_config(path: &Path, document: &Value) -> Result<(), AuthError> {
    let failed = |e: std::io::Error| AuthError::Write {
        path: path.into(),
        detail: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(document).expect("a JSON value serialises");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(failed)
}

/// The host a config key or a login server names: `https://host:5000/v1/` → `host:5000`,
/// with Docker Hub's names all `docker.io` (as image references name it).
pub fn registry_host(server: &str) -> String {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_REGISTRY.to_owned()
        }
        host => host.to_owned(),
    }
}

/// The key `login` writes for `server`: Docker Hub's is its historical URL, others their
/// host.
fn login_key(server: &str) -> String {
    match registry_host(server) {
        host if host == DEFAULT_REGISTRY => DOCKER_HUB_KEY.to_owned(),
        host => host,
    }
}

/// The credentials `document` (read from `path`) holds for `registry` (`host[:port]`, as
/// image references name it), `None` when it holds none.
pub fn credentials_in(
    document: &Value,
    path: &Path,
    registry: &str,
) -> Result<Option<RegistryCredential>, AuthError> {
    let entries = document.get("auths").and_then(Value::as_object);
    let entry =
        entries.and_then(|auths| auths.iter().find(|(key, _)| registry_host(key) == registry));
    if let Some((key, entry)) = entry
        && let Some(credential) =
            inline_credential(entry).map_err(|detail| AuthError::BadEntry {
                path: path.into(),
                registry: registry.into(),
                key: key.clone(),
                detail,
            })?
    {
        return Ok(Some(credential));
    }
    let helper = |setting: String, helper: &Value| AuthError::HelperNotSupported {
        path: path.into(),
        registry: registry.into(),
        helper: helper.as_str().unwrap_or_default().to_owned(),
        setting,
    };
    if let Some((key, helper_name)) = document
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| registry_host(key) == registry)
        })
    {
        return Err(helper(format!("credHelpers.{key}"), helper_name));
    }
    // With a store, `docker login` leaves an empty entry in auths: the registry has
    // credentials that only the helper knows.
    if let (Some(store), Some(_)) = (document.get("credsStore"), entry) {
        return Err(helper("credsStore".into(), store));
    }
    Ok(None)
}

/// An auths entry's own credentials: `auth` (base64 of `user:password`), or `username` and
/// `password`; `None` for an empty entry (a helper's).
fn inline_credential(entry: &Value) -> Result<Option<RegistryCredential>, String> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = field("auth") {
        let decoded = BASE64
            .decode(auth.trim())
            .map_err(|_| "its auth is not base64".to_owned())?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| "its auth is not UTF-8 text".to_owned())?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| "its auth is not base64 of USER:PASSWORD".to_owned())?;
        return Ok(Some(RegistryCredential {
            username: username.into(),
            password: password.into(),
        }));
    }
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Ok(Some(RegistryCredential {
            username: username.into(),
            password: password.into(),
        }));
    }
    if field("identitytoken").is_some() {
        return Err("it holds an identity token, which swarm does not support".into());
    }
    Ok(None)
}

/// `document` with `credential` as the login for `server` (replacing any other key naming
/// the same host); every other key kept.
pub fn with_login(mut document: Value, server: &str, credential: &RegistryCredential) -> Value {
    let (document_map, host) = (object(&mut document), registry_host(server));
    let auths = object(document_map.entry("auths").or_insert_with(|| json!({})));
    auths.retain(|key, _| registry_host(key) != host);
    let encoded = BASE64.encode(format!("{}:{}", credential.username, credential.password));
    auths.insert(login_key(server), json!({ "auth": encoded }));
    document
}

/// `document` without any login for `server`, and whether it had one.
pub fn without_login(mut document: Value, server: &str) -> (Value, bool) {
    let host = registry_host(server);
    let Some(auths) = document.get_mut("auths").and_then(Value::as_object_mut) else {
        return (document, false);
    };
    let before = auths.len();
    auths.retain(|key, _| registry_host(key) != host);
    let removed = auths.len() != before;
    (document, removed)
}

/// The object `value` is, made one if it is not.
fn object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut().expect("made an object")
}

/// The credentials `--with-registry-auth` sends for a service running `image`: those of
/// the image's registry, from Docker's client config (none when it has none).
pub fn for_image(image: &str) -> Result<RegistryAuth, AuthError> {
    let path = config_path()?;
    let document = read_config(&path)?;
    auth_for_image(&document, &path, image)
}

fn auth_for_image(document: &Value, path: &Path, image: &str) -> Result<RegistryAuth, AuthError> {
    let registry = ImageRef::parse(image)
        .map_err(|reason| AuthError::InvalidImage {
            reference: image.into(),
            reason,
        })?
        .registry;
    Ok(credentials_in(document, path, &registry)?
        .map(|credential| RegistryAuth::from([(registry, credential)]))
        .unwrap_or_default())
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (host[:port]); Docker Hub when omitted
    server: Option<String>,
    /// The user name
    #[arg(long, short)]
    username: String,
    /// The password (insecure: it stays in the shell's history; prefer --password-stdin)
    #[arg(long, short, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (host[:port]); Docker Hub when omitted
    server: Option<String>,
}

/// `swarm login`: records the credentials in Docker's client config without asking the
/// registry whether they are right (a wrong password shows when a task pulls).
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = match (args.password, args.password_stdin) {
        (Some(password), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            password
        }
        (None, true) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => {
            anyhow::bail!("give the password with --password-stdin (or --password)")
        }
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let server = args.server.unwrap_or_else(|| DOCKER_HUB_KEY.to_owned());
    let path = config_path()?;
    let credential = RegistryCredential {
        username: args.username,
        password,
    };
    let document = with_login(read_config(&path)?, &server, &credential);
    write_config(&path, &document)?;
    println!(
        "Credentials for {} saved in {} (not checked with the registry)",
        registry_host(&server),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `swarm logout`: removes the credentials for a registry from Docker's client config.
pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.unwrap_or_else(|| DOCKER_HUB_KEY.to_owned());
    let path = config_path()?;
    let (document, removed) = without_login(read_config(&path)?, &server);
    if removed {
        write_config(&path, &document)?;
        println!("Removing login credentials for {}", registry_host(&server));
    } else {
        println!("Not logged in to {}", registry_host(&server));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn credential(username: &str, password: &str) -> RegistryCredential {
        RegistryCredential {
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn credentials_are_found_for_an_image_registry() {
        let path = Path::new("/home/u/.docker/config.json");
        let encoded = BASE64.encode("ci:pa:ss");
        let document = json!({
            "auths": {
                "127.0.0.1:5000": { "auth": encoded },
                "https://registry.lan/v2/": { "username": "bob", "password": "secret" },
                "https://index.docker.io/v1/": { "auth": BASE64.encode("hub:hubpass") },
                "helped.example": {},
                "token.example": { "identitytoken": "abc" },
                "bad.example": { "auth": "%%%" },
            },
            "credHelpers": { "ecr.example": "ecr-login" },
            "credsStore": "desktop",
            "psFormat": "table {{.ID}}",
        });
        let cases: Vec<(&str, Result<Option<RegistryCredential>, &str>)> = vec![
            // auth: base64 of user:password (the password may hold colons)
            (
                "127.0.0.1:5000/swarm/hello:1",
                Ok(Some(credential("ci", "pa:ss"))),
            ),
            // username and password, a key with a scheme and a path
            ("registry.lan/app", Ok(Some(credential("bob", "secret")))),
            // Docker Hub's key
            ("busybox", Ok(Some(credential("hub", "hubpass")))),
            (
                "docker.io/library/busybox",
                Ok(Some(credential("hub", "hubpass"))),
            ),
            // no entry: anonymous
            ("ghcr.io/org/app", Ok(None)),
            (
                "helped.example/app",
                Err(
                    "kept by the docker credential helper \"desktop\" (credsStore in /home/u/.docker/config.json)",
                ),
            ),
            (
                "ecr.example/app",
                Err("credential helper \"ecr-login\" (credHelpers.ecr.example in"),
            ),
            ("token.example/app", Err("identity token")),
            ("bad.example/app", Err("its auth is not base64")),
        ];
        for (image, want) in cases {
            let got = auth_for_image(&document, path, image);
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    let registry = ImageRef::parse(image).unwrap().registry;
                    assert_eq!(got.get(&registry).cloned(), want, "{image}");
                    assert!(got.len() <= 1, "{image}: only the image's registry");
                }
                (Err(error), Err(want)) => {
                    let text = error.to_string();
                    assert!(text.contains(want), "{image}: {text}");
                }
                (got, want) => panic!("{image}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn helpers_errors_say_how_to_get_around_them() {
        let document = json!({ "credHelpers": { "127.0.0.1:5000": "pass" } });
        let error = credentials_in(&document, Path::new("/c.json"), "127.0.0.1:5000")
            .unwrap_err()
            .to_string();
        assert!(error.contains("swarm login 127.0.0.1:5000"), "{error}");
        // A login of swarm's own, inline, wins over the helper.
        let document = with_login(document, "127.0.0.1:5000", &credential("a", "b"));
        let found = credentials_in(&document, Path::new("/c.json"), "127.0.0.1:5000").unwrap();
        assert_eq!(found, Some(credential("a", "b")));
    }

    #[test]
    fn a_missing_or_empty_file_holds_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(read_config(&path).unwrap(), json!({}));
        assert_eq!(
            auth_for_image(&read_config(&path).unwrap(), &path, "busybox").unwrap(),
            RegistryAuth::new()
        );
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_config(&path).unwrap(), json!({}));
        std::fs::write(&path, "[1]").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(
            error.contains("not valid JSON") && error.contains("config.json"),
            "{error}"
        );
    }

    #[test]
    fn server_names_become_hosts_and_keys() {
        let cases = [
            ("127.0.0.1:5000", "127.0.0.1:5000", "127.0.0.1:5000"),
            ("https://registry.lan/v2/", "registry.lan", "registry.lan"),
            ("http://localhost:5000", "localhost:5000", "localhost:5000"),
            (DOCKER_HUB_KEY, "docker.io", DOCKER_HUB_KEY),
            ("docker.io", "docker.io", DOCKER_HUB_KEY),
            ("registry-1.docker.io", "docker.io", DOCKER_HUB_KEY),
        ];
        for (server, host, key) in cases {
            assert_eq!(registry_host(server), host, "{server}");
            assert_eq!(login_key(server), key, "{server}");
        }
    }

    #[test]
    fn login_and_logout_keep_other_keys_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker").join("config.json");
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"other.example":{"auth":"b3RoZXI6eA=="},"http://127.0.0.1:5000":{"auth":"b2xkOm9sZA=="}},"credsStore":"desktop","psFormat":"x"}"#,
        )
        .unwrap();
        let document = with_login(
            read_config(&path).unwrap(),
            "127.0.0.1:5000",
            &credential("swarm", "pw"),
        );
        write_config(&path, &document).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let written = read_config(&path).unwrap();
        assert_eq!(written["psFormat"], "x");
        assert_eq!(written["credsStore"], "desktop");
        assert_eq!(written["auths"]["other.example"]["auth"], "b3RoZXI6eA==");
        assert_eq!(
            written["auths"]["127.0.0.1:5000"]["auth"],
            BASE64.encode("swarm:pw"),
            "the old key naming the same host was replaced"
        );
        assert!(written["auths"].get("http://127.0.0.1:5000").is_none());
        assert_eq!(
            credentials_in(&written, &path, "127.0.0.1:5000").unwrap(),
            Some(credential("swarm", "pw"))
        );
        let (document, removed) = without_login(written, "127.0.0.1:5000");
        assert!(removed);
        write_config(&path, &document).unwrap();
        let written = read_config(&path).unwrap();
        assert!(written["auths"].get("127.0.0.1:5000").is_none());
        assert_eq!(written["auths"]["other.example"]["auth"], "b3RoZXI6eA==");
        assert_eq!(written["psFormat"], "x");
        let (_, removed) = without_login(written, "127.0.0.1:5000");
        assert!(!removed, "already logged out");
        // A first login makes the file (and its directory).
        let fresh = dir.path().join("new").join("config.json");
        write_config(
            &fresh,
            &with_login(json!({}), DOCKER_HUB_KEY, &credential("a", "b")),
        )
        .unwrap();
        let written = read_config(&fresh).unwrap();
        assert_eq!(
            written["auths"][DOCKER_HUB_KEY]["auth"],
            BASE64.encode("a:b")
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("docker"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["config.json"], "no temporary file left");
    }
}
