//! The deploy files against the code: what the suite can check without pulling images.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Whether `.dockerignore`'s `patterns` leave `path` out of the build context (the patterns
/// used here: a name or path, matched as that path or a prefix directory, or `*.ext`).
fn ignored(path: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| {
        if let Some(ext) = p.strip_prefix("*.") {
            path.ends_with(&format!(".{ext}"))
        } else {
            path == *p || path.starts_with(&format!("{p}/"))
        }
    })
}

#[test]
fn every_copy_source_is_in_the_build_context() {
    let dockerfile = read(&root().join("Dockerfile"));
    let dockerignore = read(&root().join(".dockerignore"));
    let patterns: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let copies: Vec<String> = instructions(&dockerfile)
        .into_iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from="))
        .collect();
    assert!(
        copies.len() >= 5,
        "the build stage copies the sources: {copies:?}"
    );
    for copy in copies {
        let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
        let (sources, _destination) = words.split_at(words.len() - 1);
        for source in sources {
            assert!(
                root().join(source).exists(),
                "COPY {source}: not in the build context"
            );
            assert!(
                !ignored(source, &patterns),
                "COPY {source}: .dockerignore leaves it out"
            );
        }
    }
    // The build needs every workspace member's manifest.
    let manifest = read(&root().join("Cargo.toml"));
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members");
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        let top = member.split('/').next().unwrap_or(member);
        assert!(
            dockerfile.contains(&format!("COPY {top} {top}")),
            "the image's build lacks workspace member {member}"
        );
    }
}

#[test]
fn the_image_runs_as_a_user_with_a_volume_a_healthcheck_and_the_graceful_signal() {
    let dockerfile = read(&root().join("Dockerfile"));
    let all = instructions(&dockerfile);
    let runtime: Vec<&String> = all
        .iter()
        .skip_while(|i| !i.starts_with("FROM debian"))
        .collect();
    assert!(!runtime.is_empty(), "a slim runtime stage");
    let has = |prefix: &str| runtime.iter().any(|i| i.starts_with(prefix));
    assert!(
        has("USER 10001:10001"),
        "not root: the mmsub user, by number"
    );
    assert!(has("VOLUME [\"/var/lib/mmsub\"]"));
    assert!(has("HEALTHCHECK ") && dockerfile.contains("/healthz"));
    // The server drains and closes gracefully on SIGTERM (README "Configuration").
    assert!(has("STOPSIGNAL SIGTERM"));
    assert!(
        all.iter().filter(|i| i.starts_with("FROM ")).count() == 2,
        "a build stage and a runtime stage"
    );
}
