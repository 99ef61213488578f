//! The runbooks as written: every `backfill` line of the `sh` blocks of
//! docs/operator.md, then docs/auditor.md, runs in order on a scratch
//! database seeded with the demo data, and must end with the exit code and
//! print the text its `# exit N: "…"` comment claims. A runbook that drifts
//! from the binary fails here.

use std::path::Path;

use crate::seeded;

/// One step: the arguments after `backfill`, the exit code, the text.
struct Step {
    line: String,
    args: Vec<String>,
    exit: i32,
    says: Option<String>,
}

fn steps(doc: &Path) -> Vec<Step> {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut steps = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = trimmed == "```sh";
            continue;
        }
        if !in_sh || !trimmed.starts_with("backfill ") {
            continue;
        }
        let (command, claim) = trimmed
            .split_once('#')
            .unwrap_or_else(|| panic!("{}: no `# exit N` claim: {trimmed}", doc.display()));
        let claim = claim.trim();
        let (exit, says) = match claim.split_once(':') {
            Some((exit, says)) => (exit, Some(says.trim().trim_matches('"').to_owned())),
            None => (claim, None),
        };
        let exit = exit
            .trim()
            .strip_prefix("exit ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: bad claim {claim:?}", doc.display()));
        steps.push(Step {
            line: trimmed.to_owned(),
            args: command
                .split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect(),
            exit,
            says,
        });
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbooks_run_as_written() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let db = seeded(300).await;
    let cwd = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for doc in ["operator.md", "auditor.md"] {
        for step in steps(&docs.join(doc)) {
            let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("backfill"))
                .env("DATABASE_URL", &db.url)
                .current_dir(cwd.path())
                .args(&step.args)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(step.exit),
                "{doc}: `{}`\n{stdout}\n{stderr}",
                step.line
            );
            if let Some(says) = &step.says {
                assert!(
                    stdout.contains(says.as_str()) || stderr.contains(says.as_str()),
                    "{doc}: `{}` should say {says:?}\n{stdout}\n{stderr}",
                    step.line
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 12, "the runbooks show {ran} commands");
}
