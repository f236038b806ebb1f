//! What a task needs from an image's configuration blob (the OCI image config, with Docker's
//! `Healthcheck` key). Pure: parses bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How an image wants its containers run, from its config blob. Empty strings in the blob
/// are `None` here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value`, in the image's order.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// e.g. `SIGTERM`, `SIGQUIT`, or a number.
    pub stop_signal: Option<String>,
    /// `port/protocol`, e.g. `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub labels: BTreeMap<String, String>,
}

/// Docker's `HEALTHCHECK`: `test` is `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", line]`;
/// unset durations and retries mean Docker's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    stop_signal: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    healthcheck: Option<HealthcheckBlob>,
    labels: Option<BTreeMap<String, String>>,
}

/// Durations are nanoseconds, as Go's `time.Duration` serialises.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthcheckBlob {
    test: Option<Vec<String>>,
    interval: Option<u64>,
    timeout: Option<u64>,
    start_period: Option<u64>,
    start_interval: Option<u64>,
    retries: Option<u32>,
}

impl ImageConfig {
    /// Parses an image config blob. The error is serde's message.
    pub fn from_blob(blob: &[u8]) -> Result<ImageConfig, String> {
        let blob: ConfigBlob = serde_json::from_slice(blob).map_err(|e| e.to_string())?;
        let config = blob.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        // Zero means "inherit the default" in Docker's format, like an absent key.
        let nanos = |n: Option<u64>| n.filter(|&n| n > 0).map(Duration::from_nanos);
        Ok(ImageConfig {
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            user: non_empty(config.user),
            working_dir: non_empty(config.working_dir),
            stop_signal: non_empty(config.stop_signal),
            exposed_ports: config
                .exposed_ports
                .unwrap_or_default()
                .into_keys()
                .collect(),
            healthcheck: config.healthcheck.map(|h| Healthcheck {
                test: h.test.unwrap_or_default(),
                interval: nanos(h.interval),
                timeout: nanos(h.timeout),
                start_period: nanos(h.start_period),
                start_interval: nanos(h.start_interval),
                retries: h.retries.filter(|&r| r > 0),
            }),
            labels: config.labels.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_with_healthcheck_parses() {
        let blob = br#"{
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["httpd -f"],
                "Env": ["PATH=/bin", "A=b=c"], "User": "nobody:nogroup", "WorkingDir": "/www",
                "StopSignal": "SIGQUIT",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Labels": {"version": "1"},
                "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- localhost"],
                    "Interval": 5000000000, "Timeout": 2000000000, "StartPeriod": 0, "Retries": 3}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }"#;
        let config = ImageConfig::from_blob(blob).unwrap();
        assert_eq!(
            config,
            ImageConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["httpd -f".into()],
                env: vec!["PATH=/bin".into(), "A=b=c".into()],
                user: Some("nobody:nogroup".into()),
                working_dir: Some("/www".into()),
                stop_signal: Some("SIGQUIT".into()),
                exposed_ports: vec!["53/udp".into(), "80/tcp".into()],
                healthcheck: Some(Healthcheck {
                    test: vec!["CMD-SHELL".into(), "wget -q -O- localhost".into()],
                    interval: Some(Duration::from_secs(5)),
                    timeout: Some(Duration::from_secs(2)),
                    start_period: None,
                    start_interval: None,
                    retries: Some(3),
                }),
                labels: [("version".to_owned(), "1".to_owned())].into(),
            }
        );
    }

    #[test]
    fn sparse_configs_parse_to_defaults() {
        let cases: &[&[u8]] = &[
            br#"{}"#,
            br#"{"config": null}"#,
            br#"{"config": {}}"#,
            br#"{"config": {"Entrypoint": null, "Cmd": null, "User": "", "WorkingDir": ""}}"#,
        ];
        for blob in cases {
            assert_eq!(
                ImageConfig::from_blob(blob).unwrap(),
                ImageConfig::default(),
                "{}",
                String::from_utf8_lossy(blob)
            );
        }
        assert!(ImageConfig::from_blob(b"not json").is_err());
        assert!(ImageConfig::from_blob(br#"{"config": {"Env": "PATH=/bin"}}"#).is_err());
    }
}
