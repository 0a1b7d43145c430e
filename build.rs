//! Gives the build its commit, for `--version` and the `partnersync_build_info` metric: the
//! `PARTNER_SYNC_COMMIT` environment variable when set (an image build, whose context has no `.git`:
//! `docker build --build-arg COMMIT=$(git rev-parse --short=12 HEAD)`), else git's short hash of
//! HEAD, with `-dirty` for a tree with changes to tracked files; "unknown" without either.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PARTNER_SYNC_COMMIT");
    // A new commit or checkout changes HEAD or the branch it names; an edit does not rebuild this
    // (the "-dirty" mark is as of the last build of this script).
    // (Only files that exist: cargo reruns a script for a path that does not, on every build.)
    let mut watched = vec![".git/HEAD".to_string(), ".git/packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(format!(".git/{branch}"));
    }
    for path in watched.iter().filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("PARTNER_SYNC_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{hash}-dirty") } else { hash })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PARTNER_SYNC_COMMIT={commit}");
}
