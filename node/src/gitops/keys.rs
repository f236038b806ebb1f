//! A repository's replicated credentials as a fetch uses them: an ssh key's content is
//! written to a file only this process's user can read (libgit2 reads keys from files).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use swarm_api::gitops::GitCredentials;
use swarm_controller::gitops::Credentials;

/// The credentials of repository `name`, its ssh key (if any) written under `dir`.
pub fn credentials(
    dir: &Path,
    name: &str,
    secrets: Option<&GitCredentials>,
) -> std::io::Result<Credentials> {
    Ok(match secrets {
        None => Credentials::Anonymous,
        Some(GitCredentials::Token { token }) => Credentials::Token(token.clone()),
        Some(GitCredentials::Basic { username, password }) => Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        Some(GitCredentials::SshKey {
            private_key,
            passphrase,
        }) => Credentials::SshKey {
            key: write_key(dir, name, private_key)?,
            passphrase: passphrase.clone(),
        },
    })
}

/// Writes `content` to `<dir>/<name>` (0600, in a 0700 directory) unless it holds it already.
fn write_key(dir: &Path, name: &str, content: &str) -> std::io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|existing| existing == content.as_bytes()) {
        return Ok(path);
    }
    // A new file under another name, renamed over the old: a fetch reading the key
    // meanwhile sees the old key or the new one, never half of one.
    let partial = dir.join(format!(".{name}.new"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Removes the keys of repositories not in `names` (removed repositories' keys do not stay
/// on the leader's disk).
pub fn retain(dir: &Path, names: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !names.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_ssh_key_is_written_for_its_owner_only_and_tokens_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let key = GitCredentials::SshKey {
            private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\n".into(),
            passphrase: Some("pass".into()),
        };
        let Credentials::SshKey {
            key: path,
            passphrase,
        } = credentials(&keys, "app", Some(&key)).unwrap()
        else {
            panic!("not an ssh key");
        };
        assert_eq!(path, keys.join("app"));
        assert_eq!(passphrase.as_deref(), Some("pass"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&keys), 0o700);

        let token = GitCredentials::Token { token: "t".into() };
        assert_eq!(
            credentials(&keys, "app", Some(&token)).unwrap(),
            Credentials::Token("t".into())
        );
        assert_eq!(
            credentials(&keys, "app", None).unwrap(),
            Credentials::Anonymous
        );

        retain(&keys, &BTreeSet::from(["app".to_owned()]));
        assert!(path.exists());
        retain(&keys, &BTreeSet::new());
        assert!(!path.exists(), "a removed repository's key stays");
    }
}
