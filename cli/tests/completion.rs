//! `swarm completion SHELL`: a script the shell accepts, naming every command.

use std::process::Command;

fn completion(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["completion", shell])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completion_parses_and_knows_the_commands() {
    let script = completion("bash");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swarm.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for command in [
        "service", "stack", "repo", "deploy", "apply", "plan", "node",
    ] {
        assert!(script.contains(command), "{command} missing");
    }
    // Sourced, it completes `swarm re` to `repo`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(swarm re); COMP_CWORD=1; _swarm swarm re swarm; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(offered.lines().any(|l| l == "repo"), "{offered}");
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    assert!(completion("zsh").starts_with("#compdef swarm"));
    assert!(completion("fish").contains("complete -c swarm"));
}
