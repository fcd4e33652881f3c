//! The deployment scripts: ShellCheck-clean, and their `--help` works.
//! (scripts/walkthrough.sh needs a running stack; it is not run here.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use deploy_checks::{assert_no_problems, describe, repo_path, run, run_tool};

const SCRIPTS: [&str; 3] = [
    "deploy/healthcheck.sh",
    "scripts/deploy-tools.sh",
    "scripts/walkthrough.sh",
];

#[test]
fn shellcheck_passes() {
    let output = run_tool("shellcheck", SCRIPTS);
    assert!(
        output.status.success(),
        "shellcheck {}: {}",
        SCRIPTS.join(" "),
        describe(&output)
    );
}

#[test]
fn scripts_explain_themselves() {
    let mut problems = Vec::new();
    for script in ["scripts/deploy-tools.sh", "scripts/walkthrough.sh"] {
        let output = run(Command::new("bash")
            .arg(repo_path(script))
            .arg("--help")
            .stdin(Stdio::null()));
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !text.contains("Usage:") {
            problems.push(format!("{script} --help: {}", describe(&output)));
        }
        let unknown = run(Command::new("bash")
            .arg(repo_path(script))
            .arg("--no-such-flag")
            .stdin(Stdio::null()));
        if unknown.status.code() != Some(2) {
            problems.push(format!(
                "{script} --no-such-flag should exit 2: {}",
                describe(&unknown)
            ));
        }
    }
    assert_no_problems("scripts", &problems);
}
