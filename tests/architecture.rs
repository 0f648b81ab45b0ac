//! The tree keeps the shape `ARCHITECTURE.md` describes:
//!
//! - every path and crate the map names exists;
//! - the API and gateway crates do not link librdkafka (only the binary's role assembly
//!   depends on the Kafka tier);
//! - no two source files import each other (`use` declarations, resolved to files);
//! - a library file over 500 lines says at its top why it is one file.
//!
//! These read the sources and `cargo tree`; nothing here builds or runs the server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's crates: their directory and their crate name in Rust paths.
const CRATES: [(&str, &str); 10] = [
    ("metrics", "mmsub-metrics"),
    ("events", "mmsub-events"),
    ("api", "mmsub-api"),
    ("history", "mmsub-history"),
    ("relay", "mmsub-relay"),
    ("gateway", "mmsub-gateway"),
    (".", "mmsub"),
    ("loadtest", "mmsub-loadtest"),
    ("tests/mattermost-standin", "mattermost-standin"),
    ("tests/scylla-standin", "scylla-standin"),
];

/// Past this many lines, a file says at its top why it is one file.
const LONG_FILE_LINES: usize = 500;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every crate's `src/` with its `.rs` files.
fn crate_sources() -> Vec<(PathBuf, Vec<PathBuf>)> {
    CRATES
        .iter()
        .map(|(dir, _)| {
            let src = root().join(dir).join("src");
            let files = rust_files(&src);
            (src, files)
        })
        .collect()
}

#[test]
fn every_path_and_crate_the_architecture_names_exists() {
    let map = read(&root().join("ARCHITECTURE.md"));
    // A bare file name (`writer.rs`) is read in the last directory named before it
    // (`api/src/backend/embedded/`), as the prose does.
    let mut named = BTreeSet::new();
    let mut last_dir = String::new();
    for (i, quoted) in map.split('`').enumerate() {
        // Odd pieces are inside backticks.
        if i % 2 == 0 || !looks_like_path(quoted) {
            continue;
        }
        if quoted.contains('/') {
            named.insert(quoted.trim_end_matches('/').to_owned());
            last_dir = match quoted.rfind('/') {
                Some(at) => quoted[..=at].to_owned(),
                None => String::new(),
            };
        } else {
            named.insert(format!("{last_dir}{quoted}"));
        }
    }
    assert!(named.len() > 20, "the map names its code: {named:?}");
    let missing: Vec<&String> = named.iter().filter(|p| !root().join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );

    let crates: BTreeSet<&str> = CRATES.iter().map(|(_, name)| *name).collect();
    for word in map.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if word.starts_with("mmsub-") {
            assert!(
                crates.contains(word),
                "ARCHITECTURE.md names a crate {word} that does not exist"
            );
        }
    }
    for (dir, name) in CRATES {
        let manifest = read(&root().join(dir).join("Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{dir} is crate {name}"
        );
        assert!(
            map.contains(name),
            "ARCHITECTURE.md's code map has no entry for {name}"
        );
    }
}

/// A relative path of the repository: has a `/` or a file extension, and no spaces.
fn looks_like_path(text: &str) -> bool {
    !text.is_empty()
        && !text.contains([' ', '(', ')', '<', '>', ':', '*', '{', '='])
        && !text.starts_with(['-', '/', '.'])
        && (text.contains('/')
            || [".rs", ".md", ".toml", ".sh", ".yaml", ".sql"]
                .iter()
                .any(|e| text.ends_with(e)))
}

/// Every crate counts with it, so it must stand on the ground floor (ARCHITECTURE.md, Layers).
#[test]
fn the_metrics_crate_depends_on_no_other_crate_of_the_workspace() {
    let manifest = read(&root().join("metrics/Cargo.toml"));
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("metrics/Cargo.toml has dependencies");
    for (_, name) in CRATES {
        assert!(
            !dependencies
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))
                    || l.trim_start().starts_with(&format!("{name}."))),
            "mmsub-metrics depends on {name}"
        );
    }
}

#[test]
fn the_api_and_gateway_crates_do_not_link_kafka() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for package in ["mmsub-events", "mmsub-api", "mmsub-gateway"] {
        let out = Command::new(&cargo)
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "-p",
                package,
                "-i",
                "rdkafka",
            ])
            .current_dir(root())
            .output()
            .expect("running cargo tree");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.trim().is_empty(),
            "{package} depends on rdkafka:\n{stdout}"
        );
        // Without rdkafka in its graph cargo says the spec matched nothing; anything else
        // (no network, a broken manifest) is not evidence.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("did not match any packages"),
            "cargo tree for {package} failed otherwise: {stderr}"
        );
    }
    let out = Command::new(&cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "-p",
            "mmsub-relay",
            "-i",
            "rdkafka",
        ])
        .current_dir(root())
        .output()
        .expect("running cargo tree");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mmsub-relay"),
        "the check finds rdkafka where it is: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The file of the module at `segments` under `src` (`a/b.rs` or `a/b/mod.rs`), if any.
fn module_file(src: &Path, segments: &[String]) -> Option<PathBuf> {
    if segments.is_empty() {
        return ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .find(|p| p.exists());
    }
    let joined: PathBuf = segments.iter().collect();
    [
        src.join(&joined).with_extension("rs"),
        src.join(&joined).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// The module path of `file` under `src`: `a/b.rs` and `a/b/mod.rs` are `[a, b]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut segments: Vec<String> = relative
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = segments.pop().expect("a file name");
    if !["lib.rs", "main.rs", "mod.rs"].contains(&last.as_str()) {
        segments.push(last.trim_end_matches(".rs").to_owned());
    }
    segments
}

/// The `use` declarations of a file's own code (test modules left out), brace groups expanded.
fn use_paths(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        // A declaration: only visibility may stand before `use` on its line.
        let line_start = rest[..at].rfind('\n').map_or(0, |n| n + 1);
        let starts_line =
            ["", "pub", "pub(crate)", "pub(super)"].contains(&rest[line_start..at].trim());
        let tail = &rest[at + 4..];
        let Some(end) = tail.find(';') else { break };
        if starts_line {
            expand(tail[..end].trim(), &mut paths);
        }
        rest = &tail[end..];
    }
    paths
}

/// `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, out: &mut Vec<String>) {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        out.push(tree.split(" as ").next().unwrap_or(&tree).to_owned());
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').expect("balanced braces")];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", &inner[start..i]), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&format!("{prefix}{}", &inner[start..]), out);
    }
}

/// The file a `use` path leads to within its crate: the deepest module file on the path.
fn target_file(src: &Path, from: &[String], path: &str) -> Option<PathBuf> {
    let mut segments: Vec<String> = Vec::new();
    let mut parts = path.split("::").filter(|p| !p.is_empty()).peekable();
    match parts.peek().copied() {
        Some("crate") => {
            parts.next();
        }
        Some("super" | "self") => {
            segments = from.to_vec();
            while let Some(&p) = parts.peek() {
                match p {
                    "super" => {
                        segments.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                parts.next();
            }
        }
        _ => return None, // another crate or std
    }
    let mut file = module_file(src, &segments);
    for part in parts {
        segments.push(part.to_owned());
        match module_file(src, &segments) {
            Some(found) => file = Some(found),
            None => break,
        }
    }
    file
}

#[test]
fn no_two_source_files_import_each_other() {
    let mut cycles = Vec::new();
    for (src, files) in crate_sources() {
        let mut imports: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for file in files {
            let module = module_of(&src, &file);
            for path in use_paths(&read(&file)) {
                if let Some(target) = target_file(&src, &module, &path) {
                    if target != file {
                        imports.entry(file.clone()).or_default().insert(target);
                    }
                }
            }
        }
        for (file, targets) in &imports {
            for target in targets {
                if file < target && imports.get(target).is_some_and(|t| t.contains(file)) {
                    cycles.push(format!("{} <-> {}", file.display(), target.display()));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other: {cycles:#?}"
    );
}

#[test]
fn a_long_library_file_says_why_it_is_one_file() {
    let mut unexplained = Vec::new();
    for (_, files) in crate_sources() {
        for file in files {
            let source = read(&file);
            let code = source
                .split("#[cfg(test)]\nmod tests {")
                .next()
                .unwrap_or(&source);
            if code.lines().count() <= LONG_FILE_LINES || file.ends_with("tests.rs") {
                continue;
            }
            let header: String = source
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            if !header.contains("one file") {
                unexplained.push(format!(
                    "{} ({} lines)",
                    file.display(),
                    code.lines().count()
                ));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "over {LONG_FILE_LINES} lines with no word at the top on why they are one file: {unexplained:?}"
    );
}

#[test]
fn the_import_reader_resolves_what_the_tree_uses() {
    let mut paths = Vec::new();
    expand(
        "crate::{close, frames::{self, FrameReader}, Gateway}",
        &mut paths,
    );
    assert_eq!(
        paths,
        [
            "crate::close",
            "crate::frames::self",
            "crate::frames::FrameReader",
            "crate::Gateway"
        ]
    );
    let src = root().join("gateway/src");
    let from = module_of(&src, &src.join("session/operations.rs"));
    assert_eq!(from, ["session", "operations"]);
    assert_eq!(
        target_file(&src, &from, "super::Session"),
        Some(src.join("session/mod.rs"))
    );
    assert_eq!(
        target_file(&src, &from, "crate::groups::plan::Plan"),
        Some(src.join("groups/plan.rs"))
    );
    assert_eq!(target_file(&src, &from, "std::sync::Arc"), None);
}

/// Metrics no test checks yet, each with the reason. Anything else the exposition lists must
/// be named in a test under `tests/`: a metric never updated would otherwise go unnoticed.
const METRICS_NOT_YET_CHECKED: &[(&str, &str)] = &[
    (
        "mmsub_relay_rereads_total",
        "no test can force a gap: tansu shows offset n+1 before n only now and then",
    ),
    (
        "mmsub_relay_gateway_queue_frames",
        "a sampled gauge, back at 0 whenever a test can look; to be checked during a freeze",
    ),
];

#[test]
fn every_metric_is_checked_by_some_test() {
    let exposition = mmsub_metrics::Metrics::new().encode();
    let names: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() > 20, "{exposition}");
    let tests: String = ["tests/api", "tests/cluster"]
        .iter()
        .flat_map(|dir| rust_files(&root().join(dir)))
        .map(|file| read(&file))
        .collect();
    for name in names {
        let exempt = METRICS_NOT_YET_CHECKED.iter().any(|(n, _)| *n == name);
        let checked = tests.contains(&format!("\"{name}\""));
        assert!(
            checked || exempt,
            "no test checks {name}: trigger what it counts and assert the increment"
        );
        assert!(
            !(checked && exempt),
            "{name} is checked now: take it off METRICS_NOT_YET_CHECKED"
        );
    }
}
