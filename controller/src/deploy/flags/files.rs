//! `--secret`/`--config` (`service create`) and `--secret-add|rm`/`--config-add|rm`
//! (`service update`): references to configs and secrets made by `swarm secret|config
//! create`, in Docker's syntax `NAME` or `source=NAME,target=T,uid=U,gid=G,mode=0440`. They
//! pin no version: the node mounts the object's content, which never changes.

use swarm_api::spec::{ContainerSpec, FileReference};

use super::FlagError;

/// One flag value as a reference; a relative target (the source when none is given) is a
/// file in `directory`, as the stack converter places them.
pub(super) fn reference(
    flag: &'static str,
    text: &str,
    directory: &str,
) -> Result<FileReference, FlagError> {
    let invalid = |reason: &str| FlagError::invalid(flag, text, reason);
    let mut reference = FileReference {
        source: String::new(),
        target: String::new(),
        uid: "0".to_owned(),
        gid: "0".to_owned(),
        mode: 0o444,
        digest: None,
    };
    if !text.contains('=') {
        reference.source = text.to_owned();
    } else {
        for field in text.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| invalid("expected key=value fields"))?;
            match key {
                "source" | "src" => reference.source = value.to_owned(),
                "target" | "dst" | "destination" => reference.target = value.to_owned(),
                "uid" => reference.uid = value.to_owned(),
                "gid" => reference.gid = value.to_owned(),
                "mode" => {
                    reference.mode = crate::stack::convert::octal_mode(value)
                        .filter(|mode| *mode <= 0o777)
                        .ok_or_else(|| invalid("the mode is not an octal file mode (0444)"))?;
                }
                _ => return Err(invalid("the keys are source, target, uid, gid and mode")),
            }
        }
    }
    if reference.source.is_empty() {
        return Err(invalid("the source is missing"));
    }
    for (what, id) in [("uid", &reference.uid), ("gid", &reference.gid)] {
        if id.parse::<u32>().is_err() {
            return Err(invalid(&format!("the {what} is not a number")));
        }
    }
    if reference.target.is_empty() {
        reference.target = reference.source.clone();
    }
    if !reference.target.starts_with('/') {
        reference.target = format!("{directory}{}", reference.target);
    }
    Ok(reference)
}

/// The secrets and configs `secrets`/`configs` name, added to `container` (replacing one at
/// the same target), sorted by target as the converter sorts them.
pub(super) fn add(
    container: &mut ContainerSpec,
    flags: (&'static str, &'static str),
    secrets: &[String],
    configs: &[String],
) -> Result<(), FlagError> {
    for (list, flag, texts, directory) in [
        (&mut container.secrets, flags.0, secrets, "/run/secrets/"),
        (&mut container.configs, flags.1, configs, "/"),
    ] {
        for text in texts {
            let reference = reference(flag, text, directory)?;
            list.retain(|r| r.target != reference.target);
            list.push(reference);
        }
        list.sort_by(|a, b| a.target.cmp(&b.target));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_dockers_and_bad_ones_name_the_flag() {
        let short = reference("secret", "db_pw", "/run/secrets/").unwrap();
        assert_eq!(short.target, "/run/secrets/db_pw");
        assert_eq!((short.mode, short.digest), (0o444, None));
        let long = reference(
            "config",
            "source=site,target=/etc/site.conf,uid=33,gid=33,mode=0440",
            "/",
        )
        .unwrap();
        assert_eq!(
            (
                long.source.as_str(),
                long.target.as_str(),
                long.uid.as_str(),
                long.mode
            ),
            ("site", "/etc/site.conf", "33", 0o440)
        );
        let error = reference("secret", "source=a,mode=0999", "/run/secrets/").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid --secret \"source=a,mode=0999\": the mode is not an octal file mode (0444)"
        );
        assert!(reference("secret", "source=a,mode=+444", "/").is_err());
        assert!(reference("secret", "target=/x", "/").is_err());
        assert!(reference("secret", "source=a,uid=www", "/").is_err());
    }
}
