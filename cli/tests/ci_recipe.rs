//! The pull request CI recipes in `examples/ci/` (issue 11, item 8) as they are written: the
//! script of the step (GitHub Actions) or the script item (GitLab CI) that runs `swarm
//! plan`, taken from the YAML and run with bash in a clone whose `origin` is a bare
//! repository on disk, with the `swarm` built here first on the PATH. Posting the comment
//! needs GitHub or GitLab and is not run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use swarm_testkit::git;
use yaml_rust2::{Yaml, YamlLoader};

const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ci");

/// The command line both recipes run.
const PLAN_COMMAND: &str = "swarm plan --base origin/main --format markdown";

fn stack(replicas: u32) -> String {
    format!(
        "services:\n  site:\n    image: registry.example.com/web:1.4\n    deploy:\n      replicas: {replicas}\n"
    )
}

fn load(file: &str) -> Yaml {
    let path = Path::new(RECIPES).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut documents =
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(documents.len(), 1, "{}", path.display());
    documents.remove(0)
}

/// The one script of `scripts` that runs `swarm plan`.
fn the_plan_script<'a>(file: &str, scripts: impl Iterator<Item = &'a Yaml>) -> String {
    let found: Vec<&str> = scripts
        .filter_map(Yaml::as_str)
        .filter(|script| script.contains("swarm plan"))
        .collect();
    assert_eq!(found.len(), 1, "{file}: one script runs swarm plan");
    assert!(found[0].contains(PLAN_COMMAND), "{file}: {}", found[0]);
    found[0].to_owned()
}

/// The `run:` of the GitHub workflow's step that runs `swarm plan`.
fn github_script() -> String {
    let file = "github-swarm-plan.yml";
    let workflow = load(file);
    assert_eq!(
        workflow["on"]["pull_request"]["branches"][0].as_str(),
        Some("main")
    );
    let steps = workflow["jobs"]["plan"]["steps"].as_vec().expect("steps");
    assert!(
        steps.iter().any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("gh pr comment"))),
        "{file}: a step posts the comment"
    );
    the_plan_script(file, steps.iter().map(|step| &step["run"]))
}

/// The item of the GitLab job's `script:` that runs `swarm plan`.
fn gitlab_script() -> String {
    let file = "gitlab-swarm-plan.yml";
    let job = &load(file)["swarm-plan"];
    assert_eq!(
        job["rules"][0]["if"].as_str(),
        Some("$CI_PIPELINE_SOURCE == \"merge_request_event\"")
    );
    let script = job["script"].as_vec().expect("script");
    assert!(
        script.iter().any(|s| s
            .as_str()
            .is_some_and(|s| s.contains("/merge_requests/$CI_MERGE_REQUEST_IID/notes"))),
        "{file}: an item posts the note"
    );
    the_plan_script(file, script.iter())
}

/// A clone whose `origin` (a bare repository, by file://) has `main` with
/// `stacks/web.yaml` at 3 replicas; the clone is on a branch that changes it to `feature`.
fn pull_request(feature: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin.git");
    let seed = dir.path().join("seed");
    let clone = dir.path().join("clone");
    std::fs::create_dir_all(seed.join("stacks")).unwrap();
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    std::fs::write(seed.join("stacks/web.yaml"), stack(3)).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "web"]);
    let url = format!("file://{}", origin.display());
    git(&seed, &["push", "-q", &url, "main"]);
    // As CI checks it out: the pull request's commit only, no origin/main yet.
    git(
        dir.path(),
        &["clone", "-q", "--depth=1", "-b", "main", &url, "clone"],
    );
    git(&clone, &["update-ref", "-d", "refs/remotes/origin/main"]);
    git(&clone, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(clone.join("stacks/web.yaml"), feature).unwrap();
    git(&clone, &["commit", "-q", "--allow-empty", "-am", "change"]);
    (dir, clone)
}

/// Runs `script` with bash as the CI runners do (exit on error), in `dir`, with the
/// `swarm` built here first on the PATH and `GITHUB_OUTPUT` in `dir`.
fn run_script(script: &str, dir: &Path) -> Output {
    let swarm = PathBuf::from(env!("CARGO_BIN_EXE_swarm"));
    let path = std::env::join_paths(
        std::iter::once(swarm.parent().unwrap().to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    Command::new("bash")
        .args(["-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("GITHUB_OUTPUT", dir.join("github-output"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("NO_COLOR", "1")
        .output()
        .expect("bash runs")
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

#[test]
fn the_recipes_plan_a_pull_request_against_origin_main() {
    for (recipe, script) in [("github", github_script()), ("gitlab", gitlab_script())] {
        // A change: the plan, status 2 (the job goes on).
        let (_dir, clone) = pull_request(&stack(5));
        let out = run_script(&script, &clone);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{recipe}: {stderr}");
        let comment = read(&clone, "plan.md");
        assert!(
            comment.starts_with("### swarm plan: 1 to scale")
                && comment.contains("`web_site`")
                && comment.contains("3 → 5"),
            "{recipe}: {comment}"
        );
        let status = match recipe {
            "github" => read(&clone, "github-output"),
            _ => read(&clone, "plan.status"),
        };
        assert_eq!(status.trim().trim_start_matches("status="), "2", "{recipe}");

        // No change: status 0.
        let (_dir, clone) = pull_request(&stack(3));
        assert!(run_script(&script, &clone).status.success(), "{recipe}");
        assert!(
            read(&clone, "plan.md").contains("No changes"),
            "{recipe}: {}",
            read(&clone, "plan.md")
        );

        // An invalid stack file: the findings, with their place, are the comment; status 1
        // (a later step fails the job once the comment is posted).
        let (_dir, clone) = pull_request(&stack(3).replace("replicas: 3", "replicas: -2"));
        assert!(run_script(&script, &clone).status.success(), "{recipe}");
        let comment = read(&clone, "plan.md");
        assert!(
            comment.starts_with("### swarm plan: error")
                && comment.contains("stacks/web.yaml:5:17: error: services.site.deploy.replicas"),
            "{recipe}: {comment}"
        );
        let status = match recipe {
            "github" => read(&clone, "github-output"),
            _ => read(&clone, "plan.status"),
        };
        assert_eq!(status.trim().trim_start_matches("status="), "1", "{recipe}");
    }
}
